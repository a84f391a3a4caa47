/* Every CUDA op twin against its CPU twin (an mf_ctx on MF_DEV_CPU running the same public op):
 * fresh random inputs with sizes that are multiples of neither the warp (32) nor any tile (128),
 * masks with zeros, and outputs that the op overwrites POISONED with NaN on the device so an
 * element the kernel never writes fails. Gradients, which ops accumulate into, start from the same
 * random values on both sides so that overwriting instead of accumulating fails too.
 *
 * Tolerances (tests/support/tolerances.h): MF_TOL_CUDA_F32_* for f32, MF_TOL_CUDA_BF16_* when
 * matrix products read bf16. Element-wise ops use them as they are. Outputs that are sums over many
 * terms (matrix products, row reductions, layer norm, softmax gradients) use
 *   atol = max(MF_TOL_CUDA_*_ATOL, MF_TOL_CUDA_*_RTOL * max|ref|)
 * because cuBLAS/our reductions add in a different order than the CPU: the rounding error of such
 * an element follows the size of its partial sums, which the tensor's largest element bounds, not
 * the element's own (possibly cancelled) value. A wrong index or a missing term still errs by
 * O(max|ref|) and fails.
 *
 * The attention core (flash-style kernels, f32 and bf16-stored inputs, head dims below and above
 * the register slice) and AlphaFold 2's gated attention module composed on the device, forward
 * and backward.
 *
 * Plus: f32 <-> bf16 conversion bit-exact against core/dtype.h (ties, NaN payloads, overflow,
 * denormals), and bitwise run-to-run determinism of the reductions (two-pass, no atomics). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tests/support/mf_test.h"

#ifndef MF_HAVE_CUDA
int main(void)
{
    return mf_test_skip("no CUDA device (memfold was built without CUDA, MEMFOLD_CUDA=OFF)");
}
#else

#include "core/cuda/cuda_backend.h"
#include "core/cuda/cuda_ops.h"
#include "evoformer/dropout.h"

static mf_ctx g_cpu, g_gpu;
static mf_arena g_cpu_arena, g_gpu_arena;

/* ---- test buffers: the same tensor on the host (for the CPU twin) and on the device ---------- */

enum { INIT_RANDOM, INIT_OUTPUT };
enum { TOL_F32, TOL_F32_SUM, TOL_BF16_SUM };

typedef struct {
    float *h; /* the CPU twin's data */
    mf_tensor cpu, gpu;
    int64_t n;
} buf;

#define MAX_HOST 128
static void *g_host[MAX_HOST];
static int g_nhost;
static mf_arena_mark_t g_case_mark, g_case_mark_cpu;

static void *hmalloc(size_t bytes)
{
    void *p = calloc(1, bytes ? bytes : 1);
    if (!p || g_nhost == MAX_HOST) {
        fprintf(stderr, "test_cuda_ops: out of host memory or test buffer slots\n");
        abort();
    }
    g_host[g_nhost++] = p;
    return p;
}

static void case_begin(void)
{
    g_case_mark = mf_arena_mark(&g_gpu_arena);
    g_case_mark_cpu = mf_arena_mark(&g_cpu_arena);
}

static void case_end(void)
{
    mf_arena_release(&g_gpu_arena, g_case_mark);
    mf_arena_release(&g_cpu_arena, g_case_mark_cpu);
    while (g_nhost > 0) free(g_host[--g_nhost]);
}

static float *nan_array(int64_t n)
{
    float *p = hmalloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) p[i] = NAN;
    return p;
}

static void upload(const buf *b)
{
    if (b->gpu.data)
        MF_TEST_OK(mf_cuda_copy_to_device(b->gpu.data, b->h, (size_t)b->n * sizeof(float)));
}

/* f32 buffer of the given shape. INIT_RANDOM: normal(mean, sd) on both sides. INIT_OUTPUT: zeros
 * for the CPU twin and NaN on the device. */
static buf mk(int init, uint64_t seed, float mean, float sd, int ndim, const int64_t *shape)
{
    buf b;
    b.cpu = mf_tensor_make(NULL, MF_F32, MF_DEV_CPU, ndim, shape);
    b.n = mf_tensor_numel(&b.cpu);
    b.h = hmalloc((size_t)b.n * sizeof(float));
    b.cpu.data = b.h;
    mf_status st = mf_arena_tensor(&g_gpu_arena, &b.gpu, MF_F32, ndim, shape, "test tensor");
    MF_TEST_OK(st);
    if (st != MF_OK) b.gpu.data = NULL;
    if (init == INIT_RANDOM) {
        mf_test_fill_normal_f32(b.h, b.n, seed, sd);
        for (int64_t i = 0; i < b.n; i++) b.h[i] += mean;
        upload(&b);
    } else if (b.gpu.data) {
        MF_TEST_OK(mf_cuda_copy_to_device(b.gpu.data, nan_array(b.n), (size_t)b.n * sizeof(float)));
    }
    return b;
}

#define SHAPE(...)                                                                                 \
    (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (const int64_t[])                   \
    {                                                                                              \
        __VA_ARGS__                                                                                \
    }
#define RAND(seed, sd, ...) mk(INIT_RANDOM, (seed), 0.0f, (sd), SHAPE(__VA_ARGS__))
#define OUT(...)            mk(INIT_OUTPUT, 0, 0.0f, 0.0f, SHAPE(__VA_ARGS__))

/* A 0/1 mask [rows, row] with zeros and at least one 1 per row. */
static buf mask_buf(uint64_t seed, int64_t rows, int64_t row)
{
    buf b = mk(INIT_RANDOM, seed, 0.0f, 1.0f, SHAPE(rows, row));
    double *m = hmalloc((size_t)b.n * sizeof(double));
    mf_test_fill_mask_f64(m, rows, row, seed, 0.7);
    mf_f64_to_f32(b.h, m, b.n);
    upload(&b);
    return b;
}

/* Device result against the CPU twin's. */
static void check(const char *name, const buf *b, int tol)
{
    float *g = nan_array(b->n);
    if (b->gpu.data) MF_TEST_OK(mf_cuda_copy_to_host(g, b->gpu.data, (size_t)b->n * sizeof(float)));
    double atol = MF_TOL_CUDA_F32_ATOL, rtol = MF_TOL_CUDA_F32_RTOL;
    if (tol == TOL_BF16_SUM) {
        atol = MF_TOL_CUDA_BF16_ATOL;
        rtol = MF_TOL_CUDA_BF16_RTOL;
    }
    if (tol != TOL_F32) {
        double m = 0;
        for (int64_t i = 0; i < b->n; i++)
            if (fabs((double)b->h[i]) > m) m = fabs((double)b->h[i]);
        if (rtol * m > atol) atol = rtol * m;
    }
    char what[96];
    mf_tensor_describe(&b->cpu, what, sizeof what);
    char label[160];
    snprintf(label, sizeof label, "%s %s", name, what);
    mf_check_close_f32(label, g, b->h, b->n, atol, rtol);
}

static void set_compute(mf_dtype dt)
{
    g_cpu.policy.compute = dt;
    g_gpu.policy.compute = dt;
}

static int sum_tol(mf_dtype dt)
{
    return dt == MF_BF16 ? TOL_BF16_SUM : TOL_F32_SUM;
}

/* ---- matrix products ------------------------------------------------------------------------- */

static void test_linear(mf_dtype dt)
{
    printf("linear x [3, 37, 45] @ w [45, 2, 19] + b [38], compute %s\n", mf_dtype_name(dt));
    set_compute(dt);
    case_begin();
    const int tol = sum_tol(dt);
    buf x = RAND(11, 1.0f, 3, 37, 45), w = RAND(12, 0.15f, 45, 2, 19), b = RAND(13, 1.0f, 38);
    buf y = OUT(3, 37, 38);
    MF_TEST_OK(mf_linear_forward(&g_cpu, &y.cpu, &x.cpu, &w.cpu, &b.cpu, false));
    MF_TEST_OK(mf_cuda_linear_forward(&g_gpu, &y.gpu, &x.gpu, &w.gpu, &b.gpu, false));
    check("linear_forward y", &y, tol);

    buf ya = RAND(14, 1.0f, 3, 37, 38);
    MF_TEST_OK(mf_linear_forward(&g_cpu, &ya.cpu, &x.cpu, &w.cpu, NULL, true));
    MF_TEST_OK(mf_cuda_linear_forward(&g_gpu, &ya.gpu, &x.gpu, &w.gpu, NULL, true));
    check("linear_forward y += (no bias)", &ya, tol);

    buf dy = RAND(15, 1.0f, 3, 37, 38);
    buf dx = RAND(16, 1.0f, 3, 37, 45), dw = RAND(17, 1.0f, 45, 2, 19), db = RAND(18, 1.0f, 38);
    MF_TEST_OK(mf_linear_backward(&g_cpu, &dx.cpu, &dw.cpu, &db.cpu, &dy.cpu, &x.cpu, &w.cpu));
    MF_TEST_OK(mf_cuda_linear_backward(&g_gpu, &dx.gpu, &dw.gpu, &db.gpu, &dy.gpu, &x.gpu, &w.gpu));
    check("linear_backward dx +=", &dx, tol);
    check("linear_backward dw +=", &dw, tol);
    /* db is a plain f32 row sum in either compute precision. */
    check("linear_backward db +=", &db, TOL_F32_SUM);
    case_end();
    set_compute(MF_F32);
}

static void test_matmul(bool ta, bool tb, int64_t batch, int64_t ba, int64_t bb, mf_dtype dt)
{
    const int64_t M = 37, N = 29, K = 45;
    printf("matmul batch %lld (a %lld, b %lld), M %lld N %lld K %lld, ta %d tb %d, compute %s\n",
           (long long)batch, (long long)ba, (long long)bb, (long long)M, (long long)N, (long long)K,
           ta, tb, mf_dtype_name(dt));
    set_compute(dt);
    case_begin();
    const int tol = sum_tol(dt);
    buf a = ta ? RAND(21, 1.0f, ba, K, M) : RAND(21, 1.0f, ba, M, K);
    buf b = tb ? RAND(22, 0.15f, bb, N, K) : RAND(22, 0.15f, bb, K, N);
    buf c = OUT(batch, M, N);
    MF_TEST_OK(mf_matmul(&g_cpu, &c.cpu, &a.cpu, ta, &b.cpu, tb, 0.7f, 0.0f));
    MF_TEST_OK(mf_cuda_matmul(&g_gpu, &c.gpu, &a.gpu, ta, &b.gpu, tb, 0.7f, 0.0f));
    check("matmul c = 0.7 op(a) op(b)", &c, tol);

    buf c2 = RAND(23, 1.0f, batch, M, N);
    MF_TEST_OK(mf_matmul(&g_cpu, &c2.cpu, &a.cpu, ta, &b.cpu, tb, -1.3f, 0.5f));
    MF_TEST_OK(mf_cuda_matmul(&g_gpu, &c2.gpu, &a.gpu, ta, &b.gpu, tb, -1.3f, 0.5f));
    check("matmul c = -1.3 op(a) op(b) + 0.5 c", &c2, tol);

    buf dc = RAND(24, 1.0f, batch, M, N);
    buf da = ta ? RAND(25, 1.0f, ba, K, M) : RAND(25, 1.0f, ba, M, K);
    buf db = tb ? RAND(26, 1.0f, bb, N, K) : RAND(26, 1.0f, bb, K, N);
    MF_TEST_OK(mf_matmul_backward(&g_cpu, &da.cpu, &db.cpu, &dc.cpu, &a.cpu, ta, &b.cpu, tb, 0.7f));
    MF_TEST_OK(
        mf_cuda_matmul_backward(&g_gpu, &da.gpu, &db.gpu, &dc.gpu, &a.gpu, ta, &b.gpu, tb, 0.7f));
    check("matmul_backward da +=", &da, tol);
    check("matmul_backward db +=", &db, tol);
    case_end();
    set_compute(MF_F32);
}

/* ---- layer norm and softmax ------------------------------------------------------------------ */

static void test_layer_norm(int64_t rows, int64_t C)
{
    printf("layer_norm x [%lld, %lld] (mean 3, sd 2), eps 1e-5\n", (long long)rows, (long long)C);
    case_begin();
    buf x = mk(INIT_RANDOM, 31, 3.0f, 2.0f, SHAPE(rows, C));
    buf gamma = mk(INIT_RANDOM, 32, 1.0f, 0.5f, SHAPE(C)), beta = RAND(33, 1.0f, C);
    buf y = OUT(rows, C), mean = OUT(rows), rstd = OUT(rows);
    const float eps = 1e-5f;
    MF_TEST_OK(mf_layer_norm_forward(&g_cpu, &y.cpu, &mean.cpu, &rstd.cpu, &x.cpu, &gamma.cpu,
                                     &beta.cpu, eps));
    MF_TEST_OK(mf_cuda_layer_norm_forward(&g_gpu, &y.gpu, &mean.gpu, &rstd.gpu, &x.gpu, &gamma.gpu,
                                          &beta.gpu, eps));
    /* y = xhat * gamma + beta cancels where gamma * xhat ~ -beta; its error follows the terms
     * (and the mean, a sum over C), so it is checked like a sum. */
    check("layer_norm_forward y", &y, TOL_F32_SUM);
    check("layer_norm_forward mean", &mean, TOL_F32);
    check("layer_norm_forward rstd", &rstd, TOL_F32);

    /* In place (y aliases x) and without saved statistics. */
    buf xi = mk(INIT_RANDOM, 31, 3.0f, 2.0f, SHAPE(rows, C));
    MF_TEST_OK(mf_cuda_layer_norm_forward(&g_gpu, &xi.gpu, NULL, NULL, &xi.gpu, &gamma.gpu,
                                          &beta.gpu, eps));
    memcpy(xi.h, y.h, (size_t)y.n * sizeof(float));
    check("layer_norm_forward in place (y = x)", &xi, TOL_F32_SUM);

    /* Backward from the CPU's statistics so only the backward kernels are compared. */
    upload(&mean);
    upload(&rstd);
    buf dy = RAND(34, 1.0f, rows, C);
    buf dx = RAND(35, 1.0f, rows, C), dgamma = RAND(36, 1.0f, C), dbeta = RAND(37, 1.0f, C);
    MF_TEST_OK(mf_layer_norm_backward(&g_cpu, &dx.cpu, &dgamma.cpu, &dbeta.cpu, &dy.cpu, &x.cpu,
                                      &mean.cpu, &rstd.cpu, &gamma.cpu));
    MF_TEST_OK(mf_cuda_layer_norm_backward(&g_gpu, &dx.gpu, &dgamma.gpu, &dbeta.gpu, &dy.gpu,
                                           &x.gpu, &mean.gpu, &rstd.gpu, &gamma.gpu));
    check("layer_norm_backward dx +=", &dx, TOL_F32_SUM);
    check("layer_norm_backward dgamma +=", &dgamma, TOL_F32_SUM);
    check("layer_norm_backward dbeta +=", &dbeta, TOL_F32_SUM);
    case_end();
}

static void test_softmax(int64_t B, int64_t H, int64_t Q, int64_t K, bool with_bias, bool with_mask)
{
    printf("softmax [%lld, %lld, %lld, %lld], bias %s, mask %s (zeros at p=0.3)\n", (long long)B,
           (long long)H, (long long)Q, (long long)K, with_bias ? "[H, Q, K]" : "none",
           with_mask ? "[B, K]" : "none");
    case_begin();
    buf x = RAND(41, 2.0f, B, H, Q, K), bias = RAND(42, 1.0f, H, Q, K);
    buf mask = mask_buf(43, B, K);
    const mf_tensor *bc = with_bias ? &bias.cpu : NULL, *bg = with_bias ? &bias.gpu : NULL;
    const mf_tensor *mc = with_mask ? &mask.cpu : NULL, *mg = with_mask ? &mask.gpu : NULL;
    buf y = OUT(B, H, Q, K);
    MF_TEST_OK(mf_softmax_forward(&g_cpu, &y.cpu, &x.cpu, bc, mc));
    MF_TEST_OK(mf_cuda_softmax_forward(&g_gpu, &y.gpu, &x.gpu, bg, mg));
    check("softmax_forward y", &y, TOL_F32);

    buf xi = RAND(41, 2.0f, B, H, Q, K);
    MF_TEST_OK(mf_cuda_softmax_forward(&g_gpu, &xi.gpu, &xi.gpu, bg, mg));
    memcpy(xi.h, y.h, (size_t)y.n * sizeof(float));
    check("softmax_forward in place (y = x)", &xi, TOL_F32);

    upload(&y); /* the CPU's probabilities feed both backward passes */
    buf dy = RAND(44, 1.0f, B, H, Q, K);
    buf dx = RAND(45, 1.0f, B, H, Q, K), dbias = RAND(46, 1.0f, H, Q, K);
    MF_TEST_OK(mf_softmax_backward(&g_cpu, &dx.cpu, &dbias.cpu, &dy.cpu, &y.cpu));
    MF_TEST_OK(mf_cuda_softmax_backward(&g_gpu, &dx.gpu, &dbias.gpu, &dy.gpu, &y.gpu));
    check("softmax_backward dx +=", &dx, TOL_F32_SUM);
    check("softmax_backward dbias +=", &dbias, TOL_F32_SUM);
    case_end();
}

/* ---- attention ------------------------------------------------------------------------------- */

/* t's data converted to bf16 on each side (arena tensors of the case), or t itself for f32. */
static void to_storage(const buf *t, mf_dtype dt, mf_tensor *cpu, mf_tensor *gpu)
{
    *cpu = t->cpu;
    *gpu = t->gpu;
    if (dt == MF_F32) return;
    MF_TEST_OK(mf_arena_tensor(&g_cpu_arena, cpu, dt, t->cpu.ndim, t->cpu.shape, "bf16 copy"));
    MF_TEST_OK(mf_arena_tensor(&g_gpu_arena, gpu, dt, t->cpu.ndim, t->cpu.shape, "bf16 copy"));
    MF_TEST_OK(mf_convert(&g_cpu, cpu, &t->cpu));
    if (t->gpu.data && gpu->data) MF_TEST_OK(mf_convert(&g_gpu, gpu, &t->gpu));
}

/* The attention core (flash-style kernels) against the CPU op: out and lse poisoned, gradients
 * accumulated onto random values; the backward runs from the CPU's out and lse so only the
 * backward kernels are compared. */
static void test_attention(int64_t B, int64_t Q, int64_t K, int64_t H, int64_t D, bool with_bias,
                           bool with_mask, mf_dtype storage)
{
    printf("attention q [%lld, %lld, %lld, %lld], K %lld, bias %s, mask %s, q/k/v/out %s\n",
           (long long)B, (long long)Q, (long long)H, (long long)D, (long long)K,
           with_bias ? "[H, Q, K]" : "none", with_mask ? "[B, K] with zeros" : "none",
           mf_dtype_name(storage));
    case_begin();
    const float scale = 1.0f / sqrtf((float)D);
    buf q = RAND(141, 1.0f, B, Q, H, D), k = RAND(142, 1.0f, B, K, H, D),
        v = RAND(143, 1.0f, B, K, H, D), bias = RAND(144, 1.0f, H, Q, K);
    buf mask = mask_buf(145, B, K);
    mf_tensor qc, qg, kc, kg, vc, vg;
    to_storage(&q, storage, &qc, &qg);
    to_storage(&k, storage, &kc, &kg);
    to_storage(&v, storage, &vc, &vg);
    const mf_tensor *bc = with_bias ? &bias.cpu : NULL, *bg = with_bias ? &bias.gpu : NULL;
    const mf_tensor *mc = with_mask ? &mask.cpu : NULL, *mg = with_mask ? &mask.gpu : NULL;
    buf out = OUT(B, Q, H, D), lse = OUT(B, H, Q);
    MF_TEST_OK(mf_attention_forward(&g_cpu, &out.cpu, &lse.cpu, &qc, &kc, &vc, bc, mc, scale));
    MF_TEST_OK(mf_attention_forward(&g_gpu, &out.gpu, &lse.gpu, &qg, &kg, &vg, bg, mg, scale));
    check("attention_forward out", &out, TOL_F32_SUM);
    check("attention_forward lse", &lse, TOL_F32);
    /* inference form: no lse */
    buf out2 = OUT(B, Q, H, D);
    MF_TEST_OK(mf_attention_forward(&g_gpu, &out2.gpu, NULL, &qg, &kg, &vg, bg, mg, scale));
    memcpy(out2.h, out.h, (size_t)out.n * sizeof(float));
    check("attention_forward out (no lse)", &out2, TOL_F32_SUM);

    upload(&out);
    upload(&lse);
    mf_tensor oc, og;
    to_storage(&out, storage, &oc, &og);
    buf dout = RAND(146, 1.0f, B, Q, H, D);
    buf dq = RAND(147, 1.0f, B, Q, H, D), dk = RAND(148, 1.0f, B, K, H, D),
        dv = RAND(149, 1.0f, B, K, H, D), dbias = RAND(150, 1.0f, H, Q, K);
    MF_TEST_OK(mf_attention_backward(&g_cpu, &dq.cpu, &dk.cpu, &dv.cpu,
                                     with_bias ? &dbias.cpu : NULL, &dout.cpu, &oc, &lse.cpu, &qc,
                                     &kc, &vc, bc, mc, scale));
    MF_TEST_OK(mf_attention_backward(&g_gpu, &dq.gpu, &dk.gpu, &dv.gpu,
                                     with_bias ? &dbias.gpu : NULL, &dout.gpu, &og, &lse.gpu, &qg,
                                     &kg, &vg, bg, mg, scale));
    check("attention_backward dq +=", &dq, TOL_F32_SUM);
    check("attention_backward dk +=", &dk, TOL_F32_SUM);
    check("attention_backward dv +=", &dv, TOL_F32_SUM);
    if (with_bias) check("attention_backward dbias +=", &dbias, TOL_F32_SUM);

    /* dv alone (no ds needed: no delta) */
    buf dv2 = RAND(151, 1.0f, B, K, H, D);
    MF_TEST_OK(mf_attention_backward(&g_cpu, NULL, NULL, &dv2.cpu, NULL, &dout.cpu, &oc, &lse.cpu,
                                     &qc, &kc, &vc, bc, mc, scale));
    MF_TEST_OK(mf_attention_backward(&g_gpu, NULL, NULL, &dv2.gpu, NULL, &dout.gpu, &og, &lse.gpu,
                                     &qg, &kg, &vg, bg, mg, scale));
    check("attention_backward dv alone +=", &dv2, TOL_F32_SUM);
    case_end();
}

/* AlphaFold 2's gated attention module composed from the twins on the device (projections on
 * cuBLAS, the core above, the gate), forward with saved activations and backward, against the
 * CPU; batch slices of 3 rows (policy chunk 3) on both sides. */
static void test_gated_attention(mf_dtype storage)
{
    const int64_t B = 5, N = 37, C = 19, H = 3, D = 8, Co = 23;
    printf("gated attention x [%lld, %lld, %lld], %lld heads of %lld, out %lld, saved %s, "
           "chunk 3\n",
           (long long)B, (long long)N, (long long)C, (long long)H, (long long)D, (long long)Co,
           mf_dtype_name(storage));
    case_begin();
    g_cpu.policy.storage = g_gpu.policy.storage = storage;
    g_cpu.policy.chunk_size = g_gpu.policy.chunk_size = 3;
    buf x = RAND(161, 1.0f, B, N, C), bias = RAND(162, 1.0f, H, N, N), mask = mask_buf(163, B, N);
    buf qw = RAND(164, 0.3f, C, H, D), kw = RAND(165, 0.3f, C, H, D), vw = RAND(166, 0.3f, C, H, D),
        gw = RAND(167, 0.3f, C, H, D), gb = RAND(168, 1.0f, H, D), ow = RAND(169, 0.3f, H, D, Co),
        ob = RAND(170, 1.0f, Co);
    mf_attention_params pc = {qw.cpu, kw.cpu, vw.cpu, gw.cpu, gb.cpu, ow.cpu, ob.cpu, true};
    mf_attention_params pg = {qw.gpu, kw.gpu, vw.gpu, gw.gpu, gb.gpu, ow.gpu, ob.gpu, true};
    buf out = OUT(B, N, Co);
    mf_attention_saved sc, sg;
    MF_TEST_OK(mf_gated_attention_forward(&g_cpu, &out.cpu, &sc, &x.cpu, &x.cpu, &bias.cpu,
                                          &mask.cpu, &pc, false));
    MF_TEST_OK(mf_gated_attention_forward(&g_gpu, &out.gpu, &sg, &x.gpu, &x.gpu, &bias.gpu,
                                          &mask.gpu, &pg, false));
    check("gated_attention_forward out", &out, TOL_F32_SUM);

    buf dout = RAND(171, 1.0f, B, N, Co), dx = RAND(172, 1.0f, B, N, C),
        dbias = RAND(173, 1.0f, H, N, N);
    buf dqw = RAND(174, 1.0f, C, H, D), dkw = RAND(175, 1.0f, C, H, D),
        dvw = RAND(176, 1.0f, C, H, D), dgw = RAND(177, 1.0f, C, H, D), dgb = RAND(178, 1.0f, H, D),
        dow = RAND(179, 1.0f, H, D, Co), dob = RAND(180, 1.0f, Co);
    mf_attention_params dpc = {dqw.cpu, dkw.cpu, dvw.cpu, dgw.cpu, dgb.cpu, dow.cpu, dob.cpu, true};
    mf_attention_params dpg = {dqw.gpu, dkw.gpu, dvw.gpu, dgw.gpu, dgb.gpu, dow.gpu, dob.gpu, true};
    MF_TEST_OK(mf_gated_attention_backward(&g_cpu, &dx.cpu, &dx.cpu, &dbias.cpu, &dpc, &dout.cpu,
                                           &sc, &x.cpu, &x.cpu, &bias.cpu, &mask.cpu, &pc));
    MF_TEST_OK(mf_gated_attention_backward(&g_gpu, &dx.gpu, &dx.gpu, &dbias.gpu, &dpg, &dout.gpu,
                                           &sg, &x.gpu, &x.gpu, &bias.gpu, &mask.gpu, &pg));
    /* f32 storage: the sums differ in order only. bf16 storage: the saved activations are formed
     * in f32 in another order on each side before the rounding, so some round to the other bf16
     * neighbour (2^-8 relative) and the backward carries that: bf16 tolerances */
    const int tol = storage == MF_BF16 ? TOL_BF16_SUM : TOL_F32_SUM;
    check("gated_attention_backward dx +=", &dx, tol);
    check("gated_attention_backward dbias +=", &dbias, tol);
    check("gated_attention_backward dquery_w +=", &dqw, tol);
    check("gated_attention_backward dkey_w +=", &dkw, tol);
    check("gated_attention_backward dvalue_w +=", &dvw, tol);
    check("gated_attention_backward dgating_w +=", &dgw, tol);
    check("gated_attention_backward dgating_b +=", &dgb, tol);
    check("gated_attention_backward doutput_w +=", &dow, tol);
    check("gated_attention_backward doutput_b +=", &dob, tol);
    g_cpu.policy.storage = g_gpu.policy.storage = MF_F32;
    g_cpu.policy.chunk_size = g_gpu.policy.chunk_size = 0;
    case_end();
}

/* Dropout masks drawn on the device: the same bits as the host's (one Philox stream). */
static void test_dropout_mask(int64_t A, int64_t C, double rate)
{
    printf("dropout mask [%lld, %lld], rate %g\n", (long long)A, (long long)C, rate);
    case_begin();
    buf m = OUT(A, C);
    const uint64_t seed = 2024, stream = 0x0102000300040005ull;
    MF_TEST_OK(mf_dropout_mask(&g_cpu, &m.cpu, rate, seed, stream));
    MF_TEST_OK(mf_dropout_mask(&g_gpu, &m.gpu, rate, seed, stream));
    float *g = nan_array(m.n);
    if (m.gpu.data) MF_TEST_OK(mf_cuda_copy_to_host(g, m.gpu.data, (size_t)m.n * sizeof(float)));
    mf_check_bitwise_f32("dropout_mask on the device", g, m.h, m.n);
    int64_t zeros = 0;
    for (int64_t i = 0; i < m.n; i++) zeros += m.h[i] == 0.0f;
    printf("  %lld of %lld dropped (rate %g)\n", (long long)zeros, (long long)m.n, rate);
    case_end();
}

/* ---- element-wise ---------------------------------------------------------------------------- */

static void test_activation(mf_activation act, const char *name)
{
    printf("activation %s on [1037]\n", name);
    case_begin();
    buf x = RAND(51, 2.0f, 1037), y = OUT(1037);
    MF_TEST_OK(mf_activation_forward(&g_cpu, act, &y.cpu, &x.cpu));
    MF_TEST_OK(mf_cuda_activation_forward(&g_gpu, act, &y.gpu, &x.gpu));
    check("activation_forward y", &y, TOL_F32);
    buf dy = RAND(52, 1.0f, 1037), dx = RAND(53, 1.0f, 1037);
    MF_TEST_OK(mf_activation_backward(&g_cpu, act, &dx.cpu, &dy.cpu, &x.cpu));
    MF_TEST_OK(mf_cuda_activation_backward(&g_gpu, act, &dx.gpu, &dy.gpu, &x.gpu));
    check("activation_backward dx +=", &dx, TOL_F32);
    case_end();
}

static void test_add_mul(int64_t R1, int64_t R2, int64_t C, int bdims)
{
    /* a [R1, R2, C]; b is [C], [R2, C] or a's shape (bdims 1, 2, 3). */
    printf("add/mul a [%lld, %lld, %lld], b with its last %d dim(s)\n", (long long)R1,
           (long long)R2, (long long)C, bdims);
    case_begin();
    buf a = RAND(61, 1.0f, R1, R2, C);
    buf b = bdims == 1   ? RAND(62, 1.0f, C)
            : bdims == 2 ? RAND(62, 1.0f, R2, C)
                         : RAND(62, 1.0f, R1, R2, C);
    buf ys = OUT(R1, R2, C), yp = OUT(R1, R2, C);
    MF_TEST_OK(mf_add(&g_cpu, &ys.cpu, &a.cpu, &b.cpu));
    MF_TEST_OK(mf_cuda_add(&g_gpu, &ys.gpu, &a.gpu, &b.gpu));
    check("add y", &ys, TOL_F32);
    MF_TEST_OK(mf_mul(&g_cpu, &yp.cpu, &a.cpu, &b.cpu));
    MF_TEST_OK(mf_cuda_mul(&g_gpu, &yp.gpu, &a.gpu, &b.gpu));
    check("mul y", &yp, TOL_F32);

    buf ai = RAND(61, 1.0f, R1, R2, C);
    MF_TEST_OK(mf_cuda_add(&g_gpu, &ai.gpu, &ai.gpu, &b.gpu));
    memcpy(ai.h, ys.h, (size_t)ys.n * sizeof(float));
    check("add in place (y = a)", &ai, TOL_F32);

    buf dy = RAND(63, 1.0f, R1, R2, C);
    buf da = RAND(64, 1.0f, R1, R2, C);
    buf db = bdims == 1   ? RAND(65, 1.0f, C)
             : bdims == 2 ? RAND(65, 1.0f, R2, C)
                          : RAND(65, 1.0f, R1, R2, C);
    MF_TEST_OK(mf_add_backward(&g_cpu, &da.cpu, &db.cpu, &dy.cpu));
    MF_TEST_OK(mf_cuda_add_backward(&g_gpu, &da.gpu, &db.gpu, &dy.gpu));
    check("add_backward da +=", &da, TOL_F32);
    check("add_backward db +=", &db, TOL_F32_SUM);
    MF_TEST_OK(mf_mul_backward(&g_cpu, &da.cpu, &db.cpu, &dy.cpu, &a.cpu, &b.cpu));
    MF_TEST_OK(mf_cuda_mul_backward(&g_gpu, &da.gpu, &db.gpu, &dy.gpu, &a.gpu, &b.gpu));
    check("mul_backward da +=", &da, TOL_F32_SUM);
    check("mul_backward db +=", &db, TOL_F32_SUM);
    case_end();
}

static void test_scale_axpy_fill(void)
{
    printf("scale, axpy, fill on [7, 149]\n");
    case_begin();
    buf x = RAND(71, 1.0f, 7, 149), y = OUT(7, 149);
    MF_TEST_OK(mf_scale(&g_cpu, &y.cpu, &x.cpu, 0.37f));
    MF_TEST_OK(mf_cuda_scale(&g_gpu, &y.gpu, &x.gpu, 0.37f));
    check("scale y = 0.37 x", &y, TOL_F32);
    buf z = RAND(72, 1.0f, 7, 149);
    MF_TEST_OK(mf_axpy(&g_cpu, &z.cpu, -1.3f, &x.cpu));
    MF_TEST_OK(mf_cuda_axpy(&g_gpu, &z.gpu, -1.3f, &x.gpu));
    check("axpy y += -1.3 x", &z, TOL_F32);
    buf f = OUT(7, 149);
    MF_TEST_OK(mf_fill(&g_cpu, &f.cpu, 2.5f));
    MF_TEST_OK(mf_cuda_fill(&g_gpu, &f.gpu, 2.5f));
    check("fill 2.5", &f, TOL_F32);
    case_end();
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static void test_convert(void)
{
    /* Ties to even, just above a tie, overflow to Inf, Inf, quiet and signalling NaNs (a payload in
     * the low bits only must stay a NaN), denormals and their ties, signed zero. */
    static const uint32_t special[] = {
        0x3f808000u, 0x3f818000u, 0x3f80c000u, 0x3f80bfffu, 0x7f7fffffu, 0x7f7f8000u,
        0x7f800000u, 0xff800000u, 0x7fc00001u, 0x7f800001u, 0xffa00000u, 0x00000001u,
        0x00008000u, 0x00018000u, 0x80000000u, 0x807fffffu, 0x00000000u, 0xc0490fdbu};
    const int64_t ns = (int64_t)(sizeof special / sizeof special[0]), n = ns + 1000;
    printf("convert f32 <-> bf16 on %lld values (%lld special + random)\n", (long long)n,
           (long long)ns);
    case_begin();
    buf x = RAND(81, 3.0f, n);
    for (int64_t i = 0; i < ns; i++) memcpy(&x.h[i], &special[i], 4);
    upload(&x);
    mf_tensor hb;
    MF_TEST_OK(mf_arena_tensor(&g_gpu_arena, &hb, MF_BF16, 1, &n, "test bf16"));
    mf_bf16 *got = hmalloc((size_t)n * sizeof(mf_bf16));
    mf_bf16 *cpu = hmalloc((size_t)n * sizeof(mf_bf16));
    memset(got, 0xff, (size_t)n * sizeof(mf_bf16));
    if (hb.data) {
        MF_TEST_OK(mf_cuda_copy_to_device(hb.data, got, (size_t)n * sizeof(mf_bf16)));
        MF_TEST_OK(mf_cuda_convert(&g_gpu, &hb, &x.gpu));
        MF_TEST_OK(mf_cuda_copy_to_host(got, hb.data, (size_t)n * sizeof(mf_bf16)));
    }
    mf_tensor cb = mf_tensor_make(cpu, MF_BF16, MF_DEV_CPU, 1, &n);
    MF_TEST_OK(mf_convert(&g_cpu, &cb, &x.cpu));
    int64_t bad_spec = 0, bad_cpu = 0, first = -1;
    for (int64_t i = 0; i < n; i++) {
        if (got[i].bits != mf_f32_to_bf16(x.h[i]).bits) {
            bad_spec++;
            if (first < 0) first = i;
        }
        if (got[i].bits != cpu[i].bits) bad_cpu++;
    }
    MF_TEST_TRUE(bad_spec == 0,
                 "f32 -> bf16: %lld of %lld differ from mf_f32_to_bf16; first %lld: "
                 "0x%08x -> 0x%04x, expected 0x%04x",
                 (long long)bad_spec, (long long)n, (long long)first,
                 first >= 0 ? f32_bits(x.h[first]) : 0u, first >= 0 ? got[first].bits : 0u,
                 first >= 0 ? mf_f32_to_bf16(x.h[first]).bits : 0u);
    MF_TEST_TRUE(bad_cpu == 0, "f32 -> bf16: %lld of %lld differ from the CPU twin",
                 (long long)bad_cpu, (long long)n);
    printf("  %-48s n=%-8lld bitwise vs core/dtype.h and the CPU twin  %s\n", "convert f32 -> bf16",
           (long long)n, bad_spec || bad_cpu ? "FAIL" : "ok");

    /* bf16 -> f32 is exact: every bf16 bit pattern of the upper half-range and NaNs included. */
    buf back = OUT(n);
    for (int64_t i = 0; i < n; i++) cpu[i].bits = (uint16_t)(i * 61 + 7);
    if (hb.data) MF_TEST_OK(mf_cuda_copy_to_device(hb.data, cpu, (size_t)n * sizeof(mf_bf16)));
    MF_TEST_OK(mf_cuda_convert(&g_gpu, &back.gpu, &hb));
    float *gb = nan_array(n);
    if (back.gpu.data)
        MF_TEST_OK(mf_cuda_copy_to_host(gb, back.gpu.data, (size_t)n * sizeof(float)));
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++)
        if (f32_bits(gb[i]) != f32_bits(mf_bf16_to_f32(cpu[i]))) bad++;
    MF_TEST_TRUE(bad == 0, "bf16 -> f32: %lld of %lld not exact", (long long)bad, (long long)n);
    printf("  %-48s n=%-8lld bitwise vs core/dtype.h  %s\n", "convert bf16 -> f32", (long long)n,
           bad ? "FAIL" : "ok");

    buf copy = OUT(n);
    MF_TEST_OK(mf_cuda_convert(&g_gpu, &copy.gpu, &x.gpu));
    memcpy(copy.h, x.h, (size_t)n * sizeof(float));
    float *gc = nan_array(n);
    if (copy.gpu.data)
        MF_TEST_OK(mf_cuda_copy_to_host(gc, copy.gpu.data, (size_t)n * sizeof(float)));
    MF_TEST_TRUE(memcmp(gc, x.h, (size_t)n * sizeof(float)) == 0,
                 "convert f32 -> f32 is not a copy");
    case_end();
}

/* ---- layout, reductions, indexing ----------------------------------------------------------- */

static void test_transpose01(int64_t A, int64_t B, int64_t C)
{
    printf("transpose01 [%lld, %lld, %lld]\n", (long long)A, (long long)B, (long long)C);
    case_begin();
    buf x = RAND(91, 1.0f, A, B, C), y = OUT(B, A, C), ya = RAND(92, 1.0f, B, A, C);
    MF_TEST_OK(mf_transpose01(&g_cpu, &y.cpu, &x.cpu, false));
    MF_TEST_OK(mf_cuda_transpose01(&g_gpu, &y.gpu, &x.gpu, false));
    check("transpose01 y", &y, TOL_F32);
    MF_TEST_OK(mf_transpose01(&g_cpu, &ya.cpu, &x.cpu, true));
    MF_TEST_OK(mf_cuda_transpose01(&g_gpu, &ya.gpu, &x.gpu, true));
    check("transpose01 y +=", &ya, TOL_F32);
    case_end();
}

static void test_sum_axis(int64_t outer, int64_t n, int64_t inner)
{
    const float scale = 1.0f / (float)n;
    printf("sum_axis [%lld, %lld, %lld] -> [%lld, %lld], scale 1/%lld\n", (long long)outer,
           (long long)n, (long long)inner, (long long)outer, (long long)inner, (long long)n);
    case_begin();
    buf x = RAND(101, 1.0f, outer, n, inner), y = OUT(outer, inner);
    MF_TEST_OK(mf_sum_axis(&g_cpu, &y.cpu, &x.cpu, scale));
    MF_TEST_OK(mf_cuda_sum_axis(&g_gpu, &y.gpu, &x.gpu, scale));
    check("sum_axis y", &y, TOL_F32_SUM);
    buf dy = RAND(102, 1.0f, outer, inner), dx = RAND(103, 1.0f, outer, n, inner);
    MF_TEST_OK(mf_sum_axis_backward(&g_cpu, &dx.cpu, &dy.cpu, scale));
    MF_TEST_OK(mf_cuda_sum_axis_backward(&g_gpu, &dx.gpu, &dy.gpu, scale));
    check("sum_axis_backward dx +=", &dx, TOL_F32);
    case_end();
}

static void test_gather_scatter(bool idx_on_device)
{
    const int64_t n = 41, m = 53, C = 19;
    printf("gather_rows/scatter_add_rows x [%lld, %lld], %lld indices (repeats, -1..-3 padding) "
           "on the %s\n",
           (long long)n, (long long)C, (long long)m, idx_on_device ? "device" : "host");
    case_begin();
    int32_t *idx = hmalloc((size_t)m * sizeof(int32_t));
    for (int64_t i = 0; i < m; i++) idx[i] = (int32_t)((i * 7 + 3) % (n + 3)) - 3;
    mf_tensor idx_cpu = mf_tensor_make(idx, MF_I32, MF_DEV_CPU, 1, &m), idx_gpu = idx_cpu;
    if (idx_on_device) {
        MF_TEST_OK(mf_arena_tensor(&g_gpu_arena, &idx_gpu, MF_I32, 1, &m, "test indices"));
        if (idx_gpu.data)
            MF_TEST_OK(mf_cuda_copy_to_device(idx_gpu.data, idx, (size_t)m * sizeof(int32_t)));
    }
    buf x = RAND(111, 1.0f, n, C), y = OUT(m, C);
    MF_TEST_OK(mf_gather_rows(&g_cpu, &y.cpu, &x.cpu, &idx_cpu));
    MF_TEST_OK(mf_cuda_gather_rows(&g_gpu, &y.gpu, &x.gpu, &idx_gpu));
    check("gather_rows y", &y, TOL_F32);
    /* the slab scatter sums a row's terms in another association than the CPU's loop */
    buf dy = RAND(112, 1.0f, m, C), dx = RAND(113, 1.0f, n, C);
    MF_TEST_OK(mf_scatter_add_rows(&g_cpu, &dx.cpu, &dy.cpu, &idx_cpu));
    MF_TEST_OK(mf_cuda_scatter_add_rows(&g_gpu, &dx.gpu, &dy.gpu, &idx_gpu));
    check("scatter_add_rows dx +=", &dx, TOL_F32_SUM);
    case_end();
}

/* ---- determinism ----------------------------------------------------------------------------- */

static void run_twice_bitwise(const char *name, buf *out, mf_status (*op)(void *), void *ud)
{
    float *r1 = nan_array(out->n), *r2 = nan_array(out->n);
    for (int rep = 0; rep < 2; rep++) {
        upload(out); /* same starting gradient both times */
        MF_TEST_OK(op(ud));
        if (out->gpu.data)
            MF_TEST_OK(
                mf_cuda_copy_to_host(rep ? r2 : r1, out->gpu.data, (size_t)out->n * sizeof(float)));
    }
    mf_check_bitwise_f32(name, r2, r1, out->n);
}

typedef struct {
    buf *dgamma, *dbeta, *dy, *x, *mean, *rstd, *gamma, *y, *dbias, *da, *db, *a, *b;
    const mf_tensor *idx;
} det_args;

static mf_status det_scatter(void *ud)
{
    det_args *d = ud;
    return mf_cuda_scatter_add_rows(&g_gpu, &d->da->gpu, &d->dy->gpu, d->idx);
}

static mf_status det_dgamma(void *ud)
{
    det_args *d = ud;
    return mf_cuda_layer_norm_backward(&g_gpu, NULL, &d->dgamma->gpu, NULL, &d->dy->gpu, &d->x->gpu,
                                       &d->mean->gpu, &d->rstd->gpu, &d->gamma->gpu);
}

static mf_status det_sum_axis(void *ud)
{
    det_args *d = ud;
    return mf_cuda_sum_axis(&g_gpu, &d->y->gpu, &d->x->gpu, 1.0f);
}

static mf_status det_softmax_dbias(void *ud)
{
    det_args *d = ud;
    return mf_cuda_softmax_backward(&g_gpu, NULL, &d->dbias->gpu, &d->dy->gpu, &d->y->gpu);
}

static mf_status det_matmul_broadcast(void *ud)
{
    det_args *d = ud;
    return mf_cuda_matmul_backward(&g_gpu, &d->da->gpu, NULL, &d->dy->gpu, &d->a->gpu, false,
                                   &d->b->gpu, false, 1.0f);
}

static void test_determinism(void)
{
    printf("determinism: reductions across rows run twice, bitwise equal\n");
    case_begin();
    const int64_t rows = 1999, C = 67;
    buf x = mk(INIT_RANDOM, 121, 3.0f, 2.0f, SHAPE(rows, C)), dy = RAND(122, 1.0f, rows, C);
    buf gamma = RAND(123, 1.0f, C), beta = RAND(124, 1.0f, C);
    buf mean = OUT(rows), rstd = OUT(rows), y = OUT(rows, C), dgamma = RAND(125, 1.0f, C);
    MF_TEST_OK(mf_cuda_layer_norm_forward(&g_gpu, &y.gpu, &mean.gpu, &rstd.gpu, &x.gpu, &gamma.gpu,
                                          &beta.gpu, 1e-5f));
    det_args d = {
        .dgamma = &dgamma, .dy = &dy, .x = &x, .mean = &mean, .rstd = &rstd, .gamma = &gamma};
    run_twice_bitwise("layer_norm_backward dgamma [1999 rows]", &dgamma, det_dgamma, &d);

    buf xs = RAND(126, 1.0f, 2, 5003, 1), ys = OUT(2, 1);
    det_args s = {.x = &xs, .y = &ys};
    run_twice_bitwise("sum_axis [2, 5003, 1]", &ys, det_sum_axis, &s);

    buf p = RAND(127, 1.0f, 67, 3, 5, 7), dp = RAND(128, 1.0f, 67, 3, 5, 7);
    buf dbias = RAND(129, 1.0f, 3, 5, 7);
    det_args sm = {.y = &p, .dy = &dp, .dbias = &dbias};
    run_twice_bitwise("softmax_backward dbias [B 67]", &dbias, det_softmax_dbias, &sm);

    buf a = RAND(130, 1.0f, 1, 37, 45), b = RAND(131, 1.0f, 9, 45, 29);
    buf dc = RAND(132, 1.0f, 9, 37, 29), da = RAND(133, 1.0f, 1, 37, 45);
    det_args mm = {.a = &a, .b = &b, .dy = &dc, .da = &da};
    run_twice_bitwise("matmul_backward da, a broadcast over 9", &da, det_matmul_broadcast, &mm);

    /* the relative-position gradient's shape: N^2 = 97^2 rows into 65 bins (slab scatter) */
    const int64_t m = 97 * 97, nb = 65, cz = 16;
    int32_t *ih = hmalloc((size_t)m * sizeof(int32_t));
    for (int64_t i = 0; i < m; i++) ih[i] = (int32_t)((i / 97 - i % 97 + 200) % nb);
    mf_tensor idx = mf_tensor_make(ih, MF_I32, MF_DEV_CPU, 1, &m);
    buf sdy = RAND(134, 1.0f, m, cz), sdx = RAND(135, 1.0f, nb, cz);
    det_args sc = {.dy = &sdy, .da = &sdx, .idx = &idx};
    run_twice_bitwise("scatter_add_rows [97^2 rows into 65]", &sdx, det_scatter, &sc);
    upload(&sdx);
    MF_TEST_OK(mf_scatter_add_rows(&g_cpu, &sdx.cpu, &sdy.cpu, &idx));
    MF_TEST_OK(mf_cuda_scatter_add_rows(&g_gpu, &sdx.gpu, &sdy.gpu, &idx));
    check("scatter_add_rows [97^2 rows into 65] dx +=", &sdx, TOL_F32_SUM);
    case_end();
}

int main(void)
{
    if (!mf_cuda_available())
        return mf_test_skip("no CUDA device (mf_cuda_device_count() is 0: no driver or no GPU)");
    mf_status st = mf_test_ctx_cpu(&g_cpu, &g_cpu_arena, (size_t)256 << 20);
    if (st != MF_OK) {
        mf_test_fail("CPU context: %s", mf_last_error());
        return mf_test_finish("test_cuda_ops");
    }
    st = mf_arena_init(&g_gpu_arena, MF_DEV_CUDA, (size_t)256 << 20, "test cuda");
    if (st == MF_OK) st = mf_ctx_init(&g_gpu, MF_DEV_CUDA, &g_gpu_arena);
    if (st != MF_OK) {
        mf_test_fail("CUDA context: %s", mf_last_error());
        mf_test_ctx_free(&g_cpu, &g_cpu_arena);
        return mf_test_finish("test_cuda_ops");
    }

    test_linear(MF_F32);
    test_linear(MF_BF16);
    test_matmul(false, false, 3, 3, 3, MF_F32);
    test_matmul(true, false, 3, 1, 3, MF_F32);
    test_matmul(false, true, 3, 3, 1, MF_F32);
    test_matmul(true, true, 3, 3, 3, MF_F32);
    test_matmul(false, false, 2, 1, 1, MF_F32);
    test_matmul(false, false, 3, 1, 3, MF_BF16);
    test_matmul(true, true, 3, 3, 1, MF_BF16);

    test_layer_norm(87, 67);
    test_layer_norm(9, 300);
    test_layer_norm(33, 5);
    test_layer_norm(1000, 67); /* dgamma/dbeta over several slabs: the two-pass path */

    test_softmax(2, 3, 37, 45, true, true);
    test_softmax(2, 3, 37, 45, false, false);
    test_softmax(3, 2, 5, 200, true, true);
    test_softmax(2, 1, 7, 5, false, true);

    test_attention(3, 37, 45, 2, 8, true, true, MF_F32);
    test_attention(2, 33, 33, 4, 32, true, false, MF_F32);
    test_attention(2, 21, 35, 3, 40, false, true, MF_F32);  /* D > MF_ATTN_DREG: two slices */
    test_attention(7, 1, 5, 4, 16, false, true, MF_F32);    /* cross attention, one query */
    test_attention(2, 29, 31, 3, 24, true, true, MF_BF16);  /* bf16-stored q, k, v, out */
    test_attention(1, 300, 300, 4, 32, true, true, MF_F32); /* many blocks; dbias over B=1 */
    test_gated_attention(MF_F32);
    test_gated_attention(MF_BF16);
    test_dropout_mask(37, 45, 0.15);
    test_dropout_mask(1, 100003, 0.25);

    test_activation(MF_ACT_RELU, "relu");
    test_activation(MF_ACT_SIGMOID, "sigmoid");
    test_activation(MF_ACT_SOFTPLUS, "softplus");
    test_add_mul(7, 13, 29, 1);
    test_add_mul(7, 13, 29, 2);
    test_add_mul(7, 13, 29, 3);
    test_add_mul(1, 500, 29, 1); /* broadcast gradient over several slabs */
    test_scale_axpy_fill();
    test_convert();

    test_transpose01(13, 37, 5);
    test_transpose01(29, 31, 1);
    test_sum_axis(3, 301, 29);
    test_sum_axis(1, 1000, 67);
    test_sum_axis(2, 5003, 1);
    test_gather_scatter(false);
    test_gather_scatter(true);

    test_determinism();

    mf_ctx_destroy(&g_gpu);
    mf_arena_destroy(&g_gpu_arena);
    mf_test_ctx_free(&g_cpu, &g_cpu_arena);
    return mf_test_finish("test_cuda_ops");
}

#endif
