/* Evoformer block (Alg. 6), extra-MSA block (Alg. 18), template pair block (Alg. 16) and their
 * stacks (evoformer/evoformer_block.h, template_pair_block.h, evoformer_stack.h, dropout.h):
 *  1. shared dropout: mask values 0 or 1/(1-rate), the kept fraction, the sharing along axis 0
 *     (row-wise) or 1 (column-wise), bitwise reproducibility from the key, different masks for
 *     different modules and blocks, the same keep decisions in f64 and f32, off at inference;
 *  2. each block in f64 with dropout ON (fixed seed) against central finite differences of its
 *     forward-only pass (which draws the same masks): every input and every parameter gradient
 *     (all elements), random upstream gradients, odd tiny sizes, masks with zeros; the saving
 *     forward's outputs equal the forward-only outputs bitwise; the same for a 2-block Evoformer
 *     stack and a 2-block template pair stack under recompute=block (checkpoints, recomputation,
 *     stacked parameter gradients);
 *  3. each block in f32 against the f64 run (outputs, input and parameter gradients);
 *  4. the whole-block reference vector evoformer_block.h5 through mf_verify_evoformer_block
 *     (rtol 1e-5, compare_absolute for the feat_2d_norm offset gradient). */
#include <omp.h>

#include "tests/evoformer_block_harness.inc"

#include "evoformer/verify_evoformer_block.h"

/* ---- 1. dropout ------------------------------------------------------------------------------ */

static void test_dropout(mf_ctx *ctx)
{
    const int64_t A = 211, C = 127;
    const double rate = 0.25;
    float *m1 = calloc((size_t)(A * C), sizeof(float)),
          *m2 = calloc((size_t)(A * C), sizeof(float));
    double *m3 = calloc((size_t)(A * C), sizeof(double));
    mf_tensor t1 = mf_tensor_f32(m1, 2, A, C), t2 = mf_tensor_f32(m2, 2, A, C);
    mf_tensor t3 = mf_tensor_4(m3, MF_F64, MF_DEV_CPU, 2, A, C, 0, 0);
    mf_dropout_key key = mf_dropout_key_training(1234, MF_DROPOUT_STACK_EVOFORMER, 2);
    key.block = 5;
    const uint64_t s1 = mf_dropout_stream(&key, MF_DROPOUT_MSA_ROW_ATTENTION);
    MF_TEST_OK(mf_dropout_mask(ctx, &t1, rate, key.seed, s1));
    MF_TEST_OK(mf_dropout_mask(ctx, &t2, rate, key.seed, s1));
    MF_TEST_OK(mf_dropout_mask(ctx, &t3, rate, key.seed, s1));
    mf_check_bitwise_f32("dropout mask drawn twice from one key", m2, m1, A * C);
    int64_t kept = 0, bad = 0, f64_diff = 0;
    const float scale = (float)(1.0 / (1.0 - rate));
    for (int64_t i = 0; i < A * C; i++) {
        kept += m1[i] != 0.0f;
        bad += !(m1[i] == 0.0f || m1[i] == scale);
        f64_diff += (m3[i] != 0.0) != (m1[i] != 0.0f) || (m3[i] != 0.0 && m3[i] != 1.0 / 0.75);
    }
    MF_TEST_TRUE(bad == 0, "dropout mask: %lld values neither 0 nor 1/(1-rate)", (long long)bad);
    MF_TEST_TRUE(f64_diff == 0, "dropout mask: f64 keep decisions differ in %lld places",
                 (long long)f64_diff);
    /* binomial: 5 standard deviations */
    const double frac = (double)kept / (double)(A * C), sd = sqrt(0.75 * 0.25 / (double)(A * C));
    printf("dropout mask [%lld, %lld] rate 0.25: kept fraction %.4f (expect 0.75 +- %.4f)\n",
           (long long)A, (long long)C, frac, 5 * sd);
    MF_TEST_TRUE(fabs(frac - 0.75) < 5 * sd, "dropout kept fraction %.4f", frac);
    /* another module, block or recycling iteration gives another mask */
    mf_dropout_key k2 = key;
    k2.block = 6;
    const uint64_t others[3] = {
        mf_dropout_stream(&key, MF_DROPOUT_TRIANGLE_ATTENTION_ENDING_NODE),
        mf_dropout_stream(&k2, MF_DROPOUT_MSA_ROW_ATTENTION),
        mf_dropout_stream(&(mf_dropout_key){.stack = key.stack, .block = key.block, .recycle = 3},
                          MF_DROPOUT_MSA_ROW_ATTENTION)};
    for (int o = 0; o < 3; o++) {
        MF_TEST_OK(mf_dropout_mask(ctx, &t2, rate, key.seed, others[o]));
        int64_t same = 0;
        for (int64_t i = 0; i < A * C; i++) same += (m1[i] != 0.0f) == (m2[i] != 0.0f);
        MF_TEST_TRUE(same < A * C * 9 / 10, "dropout: stream %d repeats the mask (%lld of %lld)", o,
                     (long long)same, (long long)(A * C));
    }
    /* sharing: x = 1 everywhere, so x becomes the broadcast mask */
    const int64_t A0 = 4, A1 = 6, C2 = 5;
    float *x = calloc((size_t)(A0 * A1 * C2), sizeof(float));
    mf_tensor tx = mf_tensor_f32(x, 3, A0, A1, C2);
    for (int orient = 0; orient < 2; orient++) {
        for (int64_t i = 0; i < A0 * A1 * C2; i++) x[i] = 1.0f;
        const int64_t Am = orient == MF_DROPOUT_ROWWISE ? A1 : A0;
        float mk[64];
        mf_tensor tm = mf_tensor_f32(mk, 2, Am, C2);
        MF_TEST_OK(mf_dropout_mask(ctx, &tm, 0.5, 77, 3));
        MF_TEST_OK(mf_dropout_apply(ctx, &tx, &tm, (mf_dropout_orientation)orient));
        int64_t wrong = 0;
        for (int64_t a0 = 0; a0 < A0; a0++)
            for (int64_t a1 = 0; a1 < A1; a1++)
                for (int64_t c = 0; c < C2; c++) {
                    float want = orient == MF_DROPOUT_ROWWISE ? mk[a1 * C2 + c] : mk[a0 * C2 + c];
                    wrong += x[(a0 * A1 + a1) * C2 + c] != want;
                }
        MF_TEST_TRUE(wrong == 0, "dropout %s: %lld elements not the shared mask",
                     orient ? "column-wise" : "row-wise", (long long)wrong);
        printf("dropout %s: x [%lld, %lld, %lld] takes mask [%lld, %lld] shared along axis %d\n",
               orient ? "column-wise" : "row-wise", (long long)A0, (long long)A1, (long long)C2,
               (long long)Am, (long long)C2, orient ? 1 : 0);
    }
    /* inference and rate 0 leave x alone */
    for (int64_t i = 0; i < A0 * A1 * C2; i++) x[i] = 1.0f;
    mf_dropout_key inf = mf_dropout_key_inference();
    MF_TEST_OK(mf_dropout_forward(ctx, &tx, 0.5, MF_DROPOUT_ROWWISE, &inf, 1));
    MF_TEST_OK(mf_dropout_forward(ctx, &tx, 0.0, MF_DROPOUT_ROWWISE, &key, 1));
    int64_t changed = 0;
    for (int64_t i = 0; i < A0 * A1 * C2; i++) changed += x[i] != 1.0f;
    MF_TEST_TRUE(changed == 0, "dropout at inference / rate 0 changed %lld elements",
                 (long long)changed);
    MF_TEST_TRUE(mf_arena_used(ctx->arena) == 0, "dropout left %zu arena bytes",
                 mf_arena_used(ctx->arena));
    free(m1);
    free(m2);
    free(m3);
    free(x);
}

/* ---- 2. f64 against finite differences ----------------------------------------------------- */

/* Six channels wherever a layer norm normalises (c_m, c_z, the triangle multiplication's
 * center): with three or four, a row of nearly equal values (variance near 0, where the layer
 * norm's third derivative is ~eps^-3/2) turns up by chance and swamps the central difference's
 * h^2 term. */
static const h_sizes k_fd_sizes = {.S = 3,
                                   .N = 5,
                                   .c_m = 6,
                                   .c_z = 6,
                                   .heads = 2,
                                   .c_hidden = 3,
                                   .factor = 2,
                                   .opm_c = 3,
                                   .tri_mul_c = 6,
                                   .rate_row = 0.3,
                                   .rate_col = 0.2,
                                   .rate_tri_mul = 0.25,
                                   .rate_tri_att = 0.25};

/* Finite differences through a whole block (nine residual updates, each normalised, attended
 * and gated): the loss sums ~200 outputs, and its f64 rounding (tens of ulp of |L| ~ 30, ~1e-13)
 * over 2h = 2e-6 leaves up to ~7e-8 of noise per difference quotient (measured: 7.3e-8 worst,
 * the h^2 term ~6e-9). MF_TOL_FD_ATOL (1e-8, sized for single ops) is below that; 5e-7 keeps
 * about 7x headroom, while a wrong backward errs by the size of a gradient (1e-3 .. 1). */
#define TOL_FD_BLOCK_ATOL 5e-7

typedef struct {
    mf_ctx *ctx;
    h_case *c;
    double *out_m, *out_z;
} fd_run;

static void fd_forward(void *ud)
{
    fd_run *u = ud;
    h_case *c = u->c;
    mf_status st = h_forward_only(u->ctx, c, MF_F64, c->P, c->m, c->z, c->msa_mask, c->pair_mask,
                                  u->out_m, u->out_z);
    if (st != MF_OK) mf_test_fail("%s f64 forward: %s", h_kind_name[c->kind], mf_last_error());
}

/* The scope of parameter i ("msa_transition" of "msa_transition/transition1//weights"). */
static void scope_of(const char *name, char *buf, size_t cap)
{
    size_t n = strcspn(name, "/");
    if (n >= cap) n = cap - 1;
    memcpy(buf, name, n);
    buf[n] = 0;
}

static void test_fd(mf_ctx *ctx, h_kind kind, int64_t nblocks, mf_recompute recompute)
{
    h_case c;
    h_case_init(&c, kind, nblocks, &k_fd_sizes, 40 + (uint64_t)kind * 10 + (uint64_t)nblocks);
    char what[128];
    snprintf(what, sizeof what, "%s%s%s f64 (S=%lld N=%lld, dropout on)", h_kind_name[kind],
             nblocks ? " x2 stack" : "", recompute == MF_RECOMPUTE_BLOCK ? " recompute=block" : "",
             (long long)c.sz.S, (long long)c.sz.N);
    const mf_policy saved_policy = ctx->policy;
    ctx->policy.recompute = recompute;
    h_result r;
    MF_TEST_OK(h_train(ctx, &c, MF_F64, &r));
    ctx->policy = saved_policy;
    /* the forward-only pass (what the finite differences perturb) gives the same outputs */
    double *om = h_dalloc(c.nm), *oz = h_dalloc(c.nz);
    fd_run u = {ctx, &c, om, oz};
    fd_forward(&u);
    char label[192];
    snprintf(label, sizeof label, "%s: forward-only z == saving forward z", what);
    MF_TEST_TRUE(memcmp(oz, r.out_z, sizeof(double) * (size_t)c.nz) == 0, "%s", label);
    if (h_has_msa(&c))
        MF_TEST_TRUE(memcmp(om, r.out_m, sizeof(double) * (size_t)c.nm) == 0,
                     "%s: forward-only m differs from the saving forward", what);
    printf("%s: forward-only outputs bitwise equal to the saving forward's\n", what);
    /* inputs m, z, then the parameters grouped by module scope */
    mf_gc_array in[16];
    const double *grads[16];
    int n_in = 0;
    if (h_has_msa(&c)) {
        in[n_in] = (mf_gc_array){"m", c.m, c.nm};
        grads[n_in++] = r.dm;
    }
    in[n_in] = (mf_gc_array){"z", c.z, c.nz};
    grads[n_in++] = r.dz;
    static char scopes[16][64];
    for (int i = 0; i < c.np;) {
        int j = i;
        char si[64], sj[64];
        scope_of(c.specs[i].name, si, sizeof si);
        for (;;) {
            if (++j >= c.np) break;
            scope_of(c.specs[j].name, sj, sizeof sj);
            if (strcmp(si, sj)) break;
        }
        snprintf(scopes[n_in], sizeof scopes[n_in], "%.60s/*", si);
        in[n_in] = (mf_gc_array){scopes[n_in], c.P + c.off[i], c.off[j] - c.off[i]};
        grads[n_in++] = (const double *)r.dP + c.off[i];
        i = j;
    }
    mf_gc_array outs[2];
    const double *gouts[2];
    int n_out = 0;
    if (h_has_msa(&c)) {
        outs[n_out] = (mf_gc_array){"m_out", om, c.nm};
        gouts[n_out++] = c.gm;
    }
    outs[n_out] = (mf_gc_array){"z_out", oz, c.nz};
    gouts[n_out++] = c.gz;
    /* single blocks: every element; stacks: 32 random elements per module and input */
    mf_gradcheck(what, fd_forward, &u, in, grads, n_in, outs, gouts, n_out, MF_TOL_FD_STEP,
                 TOL_FD_BLOCK_ATOL, MF_TOL_FD_RTOL, nblocks ? 32 : 0);
    free(om);
    free(oz);
    h_result_free(&r);
    h_case_free(&c);
}

/* ---- 3. f32 against f64 -------------------------------------------------------------------- */

/* Per element |a - b| <= tol * (scale + |b|), scale = max|ref| of the tensor (of all parameter
 * gradients for the parameters, as the reference vectors' grad_scale: one offset gradient is
 * exactly zero in exact arithmetic). Nine updates deep, f32 rounding of O(1e-7) per operation is
 * amplified by the layer norms and softmaxes; 1e-4 leaves an order of magnitude of headroom. */
#define TOL_F32_BLOCK 1e-4

static double max_abs(const double *x, int64_t n)
{
    double mx = 0;
    for (int64_t i = 0; i < n; i++) mx = fmax(mx, fabs(x[i]));
    return mx;
}

static void check_f32_f64(const char *what, const char *name, const float *a, const double *ref,
                          int64_t n, double scale)
{
    const double mx = scale > 0 ? scale : max_abs(ref, n);
    char label[192];
    snprintf(label, sizeof label, "%s %s f32 vs f64", what, name);
    mf_check_close_f32_f64(label, a, ref, n, TOL_F32_BLOCK * mx, TOL_F32_BLOCK);
}

static void test_f32(mf_ctx *ctx, h_kind kind)
{
    const h_sizes sz = {.S = 5,
                        .N = 7,
                        .c_m = 8,
                        .c_z = 6,
                        .heads = 2,
                        .c_hidden = 4,
                        .factor = 2,
                        .opm_c = 3,
                        .tri_mul_c = 5,
                        .rate_row = 0.15,
                        .rate_col = 0.1,
                        .rate_tri_mul = 0.25,
                        .rate_tri_att = 0.25};
    h_case c;
    h_case_init(&c, kind, 0, &sz, 70 + (uint64_t)kind);
    h_result r64, r32;
    MF_TEST_OK(h_train(ctx, &c, MF_F64, &r64));
    MF_TEST_OK(h_train(ctx, &c, MF_F32, &r32));
    const char *w = h_kind_name[kind];
    if (h_has_msa(&c)) {
        check_f32_f64(w, "m_out", r32.out_m, r64.out_m, c.nm, 0);
        check_f32_f64(w, "dm", r32.dm, r64.dm, c.nm, 0);
    }
    check_f32_f64(w, "z_out", r32.out_z, r64.out_z, c.nz, 0);
    check_f32_f64(w, "dz", r32.dz, r64.dz, c.nz, 0);
    const double gscale = max_abs(r64.dP, c.nparam);
    for (int i = 0; i < c.np; i++) {
        char name[160];
        snprintf(name, sizeof name, "d[%s]", c.specs[i].name);
        check_f32_f64(w, name, (const float *)r32.dP + c.off[i], (const double *)r64.dP + c.off[i],
                      c.off[i + 1] - c.off[i], gscale);
    }
    h_result_free(&r64);
    h_result_free(&r32);
    h_case_free(&c);
}

/* ---- 4. reference vector ------------------------------------------------------------------- */

static void test_vectors(mf_ctx *ctx)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/testvectors/modules/evoformer_block.h5", mf_test_shared_dir());
    mf_module_vectors v;
    if (mf_module_vectors_load(path, &v) != MF_OK) {
        mf_test_fail("cannot load %s: %s", path, mf_last_error());
        return;
    }
    mf_verify_report *rep = calloc(1, sizeof *rep);
    MF_TEST_OK(mf_verify_evoformer_block(ctx, &v, rep));
    MF_TEST_TRUE(rep->count == 4 + MF_EVOFORMER_BLOCK_NPARAMS,
                 "evoformer_block vectors: %d comparisons, expected %d", rep->count,
                 4 + MF_EVOFORMER_BLOCK_NPARAMS);
    double worst = 0;
    for (int i = 0; i < rep->count; i++) {
        const mf_compare_result *res = &rep->items[i].result;
        if (res->rel > worst) worst = res->rel;
        if (!res->pass || i < 4)
            printf("  evoformer_block %-64s %s=%.3e  tol=%.0e  %s\n", rep->items[i].name,
                   res->absolute ? "max|d|/grad_scale" : "max|d|/max|ref|", res->rel, res->tol,
                   res->pass ? "ok" : "FAIL");
        MF_TEST_TRUE(res->pass, "evoformer_block %s: %.3e > %.0e%s", rep->items[i].name, res->rel,
                     res->tol, res->nan ? " (NaN)" : "");
    }
    printf("evoformer_block.h5: %d datasets (outputs, input and weight gradients), worst %.3e "
           "(tol %.0e)\n",
           rep->count, worst, MF_TOL_VEC_MODULE);
    free(rep);
    mf_module_vectors_free(&v);
}

int main(void)
{
    /* thousands of tiny forwards: threads would only add synchronisation (17 s instead of 2 s on
     * a loaded 2-core machine); the policy test runs the threaded paths */
    omp_set_num_threads(1);
    mf_ctx ctx;
    mf_arena arena;
    MF_TEST_OK(mf_test_ctx_cpu(&ctx, &arena, (size_t)256 << 20));
    test_dropout(&ctx);
    for (int k = 0; k < 3; k++) test_fd(&ctx, (h_kind)k, 0, MF_RECOMPUTE_OFF);
    test_fd(&ctx, K_EVOFORMER, 2, MF_RECOMPUTE_BLOCK);
    test_fd(&ctx, K_TEMPLATE_PAIR, 2, MF_RECOMPUTE_BLOCK);
    for (int k = 0; k < 3; k++) test_f32(&ctx, (h_kind)k);
    test_vectors(&ctx);
    MF_TEST_TRUE(mf_arena_used(&arena) == 0, "arena holds %zu bytes at the end",
                 mf_arena_used(&arena));
    mf_test_ctx_free(&ctx, &arena);
    return mf_test_finish("test_evoformer_block");
}
