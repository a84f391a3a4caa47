/* Memory policies of the Evoformer block and stack (evoformer/block_engine.h,
 * evoformer_stack.h) must give the baseline's numbers. Policy matrix: chunk {off, 1, 7, 64} x
 * recompute {off, block} x storage {f32, bf16} x compute {f32, bf16}, on one Evoformer block and
 * on a 2-block Evoformer stack (S = 9, N = 11: chunks 7 and 1 split both the sequences and the
 * residues unevenly), training with dropout on (AF2 rates, a fixed seed). Checked:
 *  1. recompute=block against recompute=off under the same other settings: outputs and every
 *     gradient bitwise with f32 checkpoints; with bf16 checkpoints the outputs bitwise (the
 *     forward is the same) and the gradients within TOL_BF16_STORAGE (the recomputation starts
 *     from the rounded inputs);
 *  2. every combination against the baseline (chunk off, recompute off, f32, f32): outputs
 *     bitwise whenever compute is f32 (every module's output is chunk-independent); gradients
 *     bitwise with chunk off and f32 storage and compute; within TOL_CHUNK with chunking (the
 *     attention's dk, dv and the weight gradients sum over chunks in another order), within
 *     TOL_BF16_STORAGE with bf16 storage, within TOL_BF16_COMPUTE (outputs TOL_BF16_COMPUTE_OUT)
 *     with bf16 compute;
 *  3. the arena peak of the 2-block stack with recompute=block is below recompute=off;
 *  4. recompute every:2 on a 3-block stack (a group of 2, a group of 1) and recompute=block on the
 *     extra-MSA and template pair blocks (chunk 7) bitwise against recompute=off; in-place
 *     residual updates (policy.inplace: the modules accumulate into the stream they read) in the
 *     forward-only pass of those runs, bitwise too (each module adds its finished update once,
 *     as s + u does);
 *  5. a forward-only pass leaves the arena at its mark, with and without in-place updates. */
#include "tests/evoformer_block_harness.inc"

/* Comparisons are per element |a - b| <= tol * (scale + |b|), scale = max|ref| of the tensor (of
 * all parameter gradients for those). Worst cases measured over the matrix in brackets. These are
 * whole-block tolerances at tiny channel counts (8 channels, 4 per head), where bf16 rounding does
 * not average out over long dot products: they catch structural errors (a lost mask or term is
 * O(1)); per-op bf16 accuracy is each module's test (MF_TOL_BF16). */
/* f32 sums in another order through nine updates: a few ulp amplified by layer norms [3.6e-7]. */
#define TOL_CHUNK 1e-5
/* bf16 saved activations and checkpoints (2^-9 relative rounding) enter every gradient once per
 * module they pass through, twenty-odd deep in the backward of a block [3.5e-2]. */
#define TOL_BF16_STORAGE 1e-1
/* bf16 matrix-product inputs: forward outputs [1.3e-2]; gradients, which see bf16 products in the
 * forward and again in the backward, with or without bf16 storage [9.1e-2]. */
#define TOL_BF16_COMPUTE_OUT 4e-2
#define TOL_BF16_COMPUTE     2e-1

static const h_sizes k_sizes = H_SMALL_SIZES;

typedef struct {
    double worst; /* max over arrays of max|a - b| / scale */
    bool bitwise, pass;
} cmp_stat;

static void cmp_array(cmp_stat *s, const float *a, const float *ref, int64_t n, double scale,
                      double tol)
{
    double mx = scale;
    if (mx <= 0)
        for (int64_t i = 0; i < n; i++) mx = fmax(mx, fabs((double)ref[i]));
    if (mx == 0) mx = 1;
    for (int64_t i = 0; i < n; i++) {
        const double d = fabs((double)a[i] - (double)ref[i]);
        if (!(d <= tol * (mx + fabs((double)ref[i])))) s->pass = false;
        if (a[i] != ref[i]) s->bitwise = false;
        if (d / mx > s->worst || d != d) s->worst = d != d ? INFINITY : d / mx;
    }
}

/* Outputs (m, z) or gradients (dm, dz, every parameter) of a against ref. tol 0: bitwise. */
static void expect(const char *label, const char *what, const h_case *c, const h_result *a,
                   const h_result *ref, bool grads, double tol)
{
    cmp_stat s = {0, true, true};
    if (!grads) {
        if (h_has_msa(c)) cmp_array(&s, a->out_m, ref->out_m, c->nm, 0, tol);
        cmp_array(&s, a->out_z, ref->out_z, c->nz, 0, tol);
    } else {
        if (h_has_msa(c)) cmp_array(&s, a->dm, ref->dm, c->nm, 0, tol);
        cmp_array(&s, a->dz, ref->dz, c->nz, 0, tol);
        double gs = 0;
        for (int64_t i = 0; i < c->nparam; i++) gs = fmax(gs, fabs((double)((float *)ref->dP)[i]));
        cmp_array(&s, a->dP, ref->dP, c->nparam, gs, tol);
    }
    const bool ok = tol == 0 ? s.bitwise : s.pass;
    if (tol == 0)
        printf("  %-58s %-9s bitwise %-5s%s\n", label, what, ok ? "ok" : "FAIL",
               ok ? "" : "  (differs)");
    else
        printf("  %-58s %-9s worst %.2e  tol %.0e  %s%s\n", label, what, s.worst, tol,
               s.bitwise ? "bitwise " : "", ok ? "ok" : "FAIL");
    MF_TEST_TRUE(ok, "%s %s: worst %.3e against %s", label, what, s.worst,
                 tol == 0 ? "bitwise" : "tolerance");
}

static void set_policy(mf_ctx *ctx, int64_t chunk, mf_recompute rc, mf_dtype storage,
                       mf_dtype compute)
{
    ctx->policy = mf_policy_default();
    ctx->policy.chunk_size = chunk;
    ctx->policy.recompute = rc;
    ctx->policy.storage = storage;
    ctx->policy.compute = compute;
}

static void policy_matrix(mf_ctx *ctx, int64_t nblocks)
{
    h_case c;
    h_case_init(&c, K_EVOFORMER, nblocks, &k_sizes, 500 + (uint64_t)nblocks);
    const int64_t chunks[4] = {0, 1, 7, 64};
    const mf_dtype dts[2] = {MF_F32, MF_BF16};
    h_result base;
    set_policy(ctx, 0, MF_RECOMPUTE_OFF, MF_F32, MF_F32);
    MF_TEST_OK(h_train(ctx, &c, MF_F32, &base));
    const char *unit = nblocks ? "2-block stack" : "block";
    size_t peak[2] = {0, 0};
    for (int ci = 0; ci < 4; ci++)
        for (int si = 0; si < 2; si++)
            for (int pi = 0; pi < 2; pi++) {
                h_result r[2];
                for (int rc = 0; rc < 2; rc++) {
                    set_policy(ctx, chunks[ci], rc ? MF_RECOMPUTE_BLOCK : MF_RECOMPUTE_OFF, dts[si],
                               dts[pi]);
                    MF_TEST_OK(h_train(ctx, &c, MF_F32, &r[rc]));
                    if (ci == 0 && si == 0 && pi == 0) peak[rc] = r[rc].arena_peak;
                }
                char label[160];
                snprintf(label, sizeof label, "%s chunk=%lld storage=%s compute=%s", unit,
                         (long long)chunks[ci], mf_dtype_name(dts[si]), mf_dtype_name(dts[pi]));
                /* 1. recompute block against off, same settings */
                char l1[200];
                snprintf(l1, sizeof l1, "%s: block vs off", label);
                expect(l1, "outputs", &c, &r[1], &r[0], false, 0);
                expect(l1, "gradients", &c, &r[1], &r[0], true, si ? TOL_BF16_STORAGE : 0);
                /* 2. against the baseline */
                for (int rc = 0; rc < 2; rc++) {
                    if (!ci && !si && !pi && !rc) continue;
                    char l2[200];
                    snprintf(l2, sizeof l2, "%s recompute=%s vs baseline", label,
                             rc ? "block" : "off");
                    const double tol_out = pi ? TOL_BF16_COMPUTE_OUT : 0;
                    const double tol_grad = pi   ? TOL_BF16_COMPUTE
                                            : si ? TOL_BF16_STORAGE
                                            : ci ? TOL_CHUNK
                                                 : 0;
                    expect(l2, "outputs", &c, &r[rc], &base, false, tol_out);
                    expect(l2, "gradients", &c, &r[rc], &base, true, tol_grad);
                }
                h_result_free(&r[0]);
                h_result_free(&r[1]);
            }
    char b0[32], b1[32];
    printf("%s arena peak (chunk off, f32): recompute=off %s, recompute=block %s (%.2fx)\n", unit,
           mf_format_bytes(peak[0], b0, sizeof b0), mf_format_bytes(peak[1], b1, sizeof b1),
           (double)peak[1] / (double)peak[0]);
    if (nblocks)
        MF_TEST_TRUE(peak[1] < peak[0], "%s: recompute=block peak %zu not below off %zu", unit,
                     peak[1], peak[0]);
    set_policy(ctx, 0, MF_RECOMPUTE_OFF, MF_F32, MF_F32);
    h_result_free(&base);
    h_case_free(&c);
}

/* One more training run of c under ctx's policy, outputs and gradients bitwise against ref. */
static void bitwise_variant(mf_ctx *ctx, const h_case *c, const char *label, const char *variant,
                            const h_result *ref, h_result *out)
{
    MF_TEST_OK(h_train(ctx, c, MF_F32, out));
    char l[200];
    snprintf(l, sizeof l, "%s, %s", label, variant);
    expect(l, "outputs", c, out, ref, false, 0);
    expect(l, "gradients", c, out, ref, true, 0);
}

/* recompute (block, or every:K on a stack) against off, bitwise, for one kind of block. */
static void recompute_bitwise(mf_ctx *ctx, h_kind kind, int64_t nblocks, mf_recompute rc, int k,
                              int64_t chunk)
{
    h_case c;
    h_case_init(&c, kind, nblocks, &k_sizes, 600 + (uint64_t)kind * 3 + (uint64_t)nblocks);
    h_result off, on;
    set_policy(ctx, chunk, MF_RECOMPUTE_OFF, MF_F32, MF_F32);
    MF_TEST_OK(h_train(ctx, &c, MF_F32, &off));
    set_policy(ctx, chunk, rc, MF_F32, MF_F32);
    ctx->policy.recompute_every = k;
    MF_TEST_OK(h_train(ctx, &c, MF_F32, &on));
    char label[160];
    snprintf(label, sizeof label, "%s%s chunk=%lld recompute=%s vs off", h_kind_name[kind],
             nblocks == 3 ? " x3 stack" : "", (long long)chunk,
             rc == MF_RECOMPUTE_EVERY_K ? "every:2" : "block");
    expect(label, "outputs", &c, &on, &off, false, 0);
    expect(label, "gradients", &c, &on, &off, true, 0);
    if (nblocks) {
        char b0[32], b1[32];
        printf("  %s arena peak: off %s, %s %s\n", label, mf_format_bytes(off.arena_peak, b0, 32),
               rc == MF_RECOMPUTE_EVERY_K ? "every:2" : "block",
               mf_format_bytes(on.arena_peak, b1, 32));
    }
    /* in-place residual updates in the recomputing forward */
    ctx->policy.inplace = true;
    h_result ip, of;
    bitwise_variant(ctx, &c, label, "inplace", &off, &ip);
    /* the checkpoints offloaded to a host arena (ctx->host_arena): the same numbers, and the
     * activation arena's peak lower by what went there */
    mf_arena host;
    MF_TEST_OK(mf_arena_init(&host, MF_DEV_CPU, (size_t)64 << 20, "host"));
    ctx->host_arena = &host;
    ctx->policy.inplace = false;
    ctx->policy.offload = true;
    bitwise_variant(ctx, &c, label, "offload", &off, &of);
    const size_t moved = mf_arena_high_water(&host);
    MF_TEST_TRUE(moved > 0 && of.arena_peak < on.arena_peak,
                 "%s, offload: %zu bytes offloaded, arena peak %zu (not offloaded %zu)", label,
                 moved, of.arena_peak, on.arena_peak);
    printf("  %s, offload: %zu checkpoint bytes in the host arena, arena peak %zu (not "
           "offloaded %zu)\n",
           label, moved, of.arena_peak, on.arena_peak);
    ctx->host_arena = NULL;
    mf_arena_destroy(&host);
    h_result_free(&of);
    set_policy(ctx, 0, MF_RECOMPUTE_OFF, MF_F32, MF_F32);
    h_result_free(&ip);
    h_result_free(&off);
    h_result_free(&on);
    h_case_free(&c);
}

/* The arena is back at its mark after a forward-only pass, and a forward-only pass with
 * recompute=off holds less than the saving pass. */
static void arena_checks(mf_ctx *ctx)
{
    h_case c;
    h_case_init(&c, K_EVOFORMER, 0, &k_sizes, 700);
    float *P = h_copy_as(c.P, c.nparam, MF_F32), *m = h_copy_as(c.m, c.nm, MF_F32),
          *z = h_copy_as(c.z, c.nz, MF_F32), *mm = h_copy_as(c.msa_mask, c.nmask_m, MF_F32),
          *pm = h_copy_as(c.pair_mask, c.nmask_z, MF_F32), *om = h_zeros(c.nm, MF_F32),
          *oz = h_zeros(c.nz, MF_F32);
    for (int ip = 0; ip < 2; ip++) {
        set_policy(ctx, 7, MF_RECOMPUTE_OFF, MF_F32, MF_F32);
        ctx->policy.inplace = ip;
        const size_t used = mf_arena_used(ctx->arena);
        MF_TEST_OK(h_forward_only(ctx, &c, MF_F32, P, m, z, mm, pm, om, oz));
        MF_TEST_TRUE(mf_arena_used(ctx->arena) == used,
                     "forward-only (inplace %d) left %zu arena bytes", ip,
                     mf_arena_used(ctx->arena) - used);
        printf("  forward-only pass (chunk 7, inplace %s) leaves the arena at its mark\n",
               ip ? "on" : "off");
    }
    set_policy(ctx, 0, MF_RECOMPUTE_OFF, MF_F32, MF_F32);
    free(P);
    free(m);
    free(z);
    free(mm);
    free(pm);
    free(om);
    free(oz);
    h_case_free(&c);
}

int main(void)
{
    mf_ctx ctx;
    mf_arena arena;
    MF_TEST_OK(mf_test_ctx_cpu(&ctx, &arena, (size_t)256 << 20));
    policy_matrix(&ctx, 0);
    policy_matrix(&ctx, 2);
    recompute_bitwise(&ctx, K_EVOFORMER, 3, MF_RECOMPUTE_EVERY_K, 2, 7);
    recompute_bitwise(&ctx, K_EXTRA_MSA, 0, MF_RECOMPUTE_BLOCK, 1, 7);
    recompute_bitwise(&ctx, K_TEMPLATE_PAIR, 0, MF_RECOMPUTE_BLOCK, 1, 7);
    arena_checks(&ctx);
    MF_TEST_TRUE(mf_arena_used(&arena) == 0, "arena holds %zu bytes at the end",
                 mf_arena_used(&arena));
    mf_test_ctx_free(&ctx, &arena);
    return mf_test_finish("test_evoformer_policies");
}
