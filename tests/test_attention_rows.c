/* The CUDA attention kernels' per-thread bodies (core/cuda/attention_rows.h) run on the host over
 * every thread index, against the CPU attention op (mf_attention_forward/backward on a CPU
 * context): out, lse, dq, dk, dv and dbias on fresh random inputs, with sizes that are multiples of
 * neither a warp nor MF_ATTN_DREG, head dims below, at and above MF_ATTN_DREG (the sliced path),
 * masks with zeros and a fully masked row, bias present and absent, cross attention (Q != K), and
 * q, k, v, o stored in bf16. Gradients accumulate onto the same random values on both sides.
 * Outputs start as NaN so that an element no body writes fails.
 *
 * This is the GPU path's arithmetic checked without a GPU; the launches themselves are checked by
 * tests/cuda/test_cuda_ops.c on a device. Tolerance: the f32 CUDA-against-CPU bound,
 * atol = max(MF_TOL_CUDA_F32_ATOL, MF_TOL_CUDA_F32_RTOL * max|ref|) as in test_cuda_ops.c (the
 * bodies add in another order than oneDNN and use libm's expf, the CPU a polynomial). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/cuda/attention_rows.h"
#include "tests/support/mf_test.h"

static mf_ctx g_ctx;
static mf_arena g_arena;

typedef struct {
    const char *name;
    int64_t B, Q, K, H, D;
    bool bias, mask, masked_row, bf16;
} rows_case;

static float *randf(int64_t n, uint64_t seed, float sd)
{
    float *p = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    mf_test_fill_normal_f32(p, n, seed, sd);
    return p;
}

static float *nanf_array(int64_t n)
{
    float *p = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++) p[i] = NAN;
    return p;
}

static float *copyf(const float *x, int64_t n)
{
    float *p = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    memcpy(p, x, sizeof(float) * (size_t)n);
    return p;
}

/* x rounded to bf16 in place, and its bf16 copy (the stored form) */
static mf_bf16 *to_bf16(float *x, int64_t n)
{
    mf_bf16 *h = malloc(sizeof(mf_bf16) * (size_t)(n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++) {
        h[i] = mf_f32_to_bf16(x[i]);
        x[i] = mf_bf16_to_f32(h[i]);
    }
    return h;
}

static double max_abs(const float *x, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++)
        if (fabs(x[i]) > m) m = fabs(x[i]);
    return m;
}

/* Sums (out and the gradients): atol from the largest reference element; lse (sum_elem false):
 * element by element, as a fully masked row's lse (about -1e9) would otherwise loosen the rest. */
static void check_as(const char *c, const char *what, const float *got, const float *ref, int64_t n,
                     bool sum_elem)
{
    char name[160];
    snprintf(name, sizeof name, "%s: %s", c, what);
    double atol = sum_elem ? MF_TOL_CUDA_F32_RTOL * max_abs(ref, n) : 0.0;
    if (atol < MF_TOL_CUDA_F32_ATOL) atol = MF_TOL_CUDA_F32_ATOL;
    mf_check_close_f32(name, got, ref, n, atol, MF_TOL_CUDA_F32_RTOL);
}

static void check(const char *c, const char *what, const float *got, const float *ref, int64_t n)
{
    check_as(c, what, got, ref, n, true);
}

/* A row body run over every (b, h, row) on the host, as its kernel's threads run it; rows are the
 * queries, or the keys for the key-owned body. */
typedef void (*row_body)(const mf_attn_rows *a, int64_t b, int64_t h, int64_t r);

static void each_row(const mf_attn_rows *a, row_body body)
{
    const int64_t L = body == mf_attn_dkv_row ? a->K : a->Q;
    for (int64_t b = 0; b < a->B; b++)
        for (int64_t h = 0; h < a->H; h++)
            for (int64_t r = 0; r < L; r++) body(a, b, h, r);
}

static void run_case(const rows_case *c, uint64_t seed)
{
    const int64_t B = c->B, Q = c->Q, K = c->K, H = c->H, D = c->D;
    const int64_t nq = B * Q * H * D, nk = B * K * H * D, nb = H * Q * K, nl = B * H * Q;
    const float scale = 1.0f / sqrtf((float)D);
    float *q = randf(nq, seed + 1, 1.0f), *k = randf(nk, seed + 2, 1.0f),
          *v = randf(nk, seed + 3, 1.0f), *dout = randf(nq, seed + 4, 1.0f);
    float *bias = c->bias ? randf(nb, seed + 5, 1.0f) : NULL;
    float *mask = NULL;
    if (c->mask) {
        double *m = malloc(sizeof(double) * (size_t)(B * K));
        mf_test_fill_mask_f64(m, B, K, seed + 6, 0.7);
        mask = malloc(sizeof(float) * (size_t)(B * K));
        mf_f64_to_f32(mask, m, B * K);
        free(m);
        if (c->masked_row)
            for (int64_t j = 0; j < K; j++) mask[(B - 1) * K + j] = 0.0f;
    }
    mf_bf16 *qh = NULL, *kh = NULL, *vh = NULL;
    if (c->bf16) {
        qh = to_bf16(q, nq);
        kh = to_bf16(k, nk);
        vh = to_bf16(v, nk);
    }
    mf_dtype qt = c->bf16 ? MF_BF16 : MF_F32;
    const int64_t sq[4] = {B, Q, H, D}, sk[4] = {B, K, H, D}, sb[3] = {H, Q, K}, sm[2] = {B, K},
                  sl[3] = {B, H, Q};
    mf_tensor tq = mf_tensor_make(c->bf16 ? (void *)qh : q, qt, MF_DEV_CPU, 4, sq);
    mf_tensor tk = mf_tensor_make(c->bf16 ? (void *)kh : k, qt, MF_DEV_CPU, 4, sk);
    mf_tensor tv = mf_tensor_make(c->bf16 ? (void *)vh : v, qt, MF_DEV_CPU, 4, sk);
    mf_tensor tbias = bias ? mf_tensor_make(bias, MF_F32, MF_DEV_CPU, 3, sb) : (mf_tensor){0};
    mf_tensor tmask = mask ? mf_tensor_make(mask, MF_F32, MF_DEV_CPU, 2, sm) : (mf_tensor){0};

    /* forward: the CPU op, then the bodies over every query row */
    float *out_ref = nanf_array(nq), *lse_ref = nanf_array(nl);
    mf_tensor tout = mf_tensor_make(out_ref, MF_F32, MF_DEV_CPU, 4, sq);
    mf_tensor tlse = mf_tensor_make(lse_ref, MF_F32, MF_DEV_CPU, 3, sl);
    MF_TEST_OK(mf_attention_forward(&g_ctx, &tout, &tlse, &tq, &tk, &tv, bias ? &tbias : NULL,
                                    mask ? &tmask : NULL, scale));
    float *out = nanf_array(nq), *lse = nanf_array(nl);
    mf_attn_rows a = {.q = tq.data,
                      .k = tk.data,
                      .v = tv.data,
                      .q_bf16 = c->bf16,
                      .k_bf16 = c->bf16,
                      .v_bf16 = c->bf16,
                      .bias = bias,
                      .mask = mask,
                      .B = B,
                      .Q = Q,
                      .K = K,
                      .H = H,
                      .D = D,
                      .scale = scale,
                      .out = out,
                      .lse = lse};
    each_row(&a, mf_attn_forward_row);
    check(c->name, "out", out, out_ref, nq);
    check_as(c->name, "lse", lse, lse_ref, nl, false);

    /* backward from the CPU forward's out and lse (o stored in bf16 with bf16 q, k, v) */
    mf_bf16 *oh = NULL;
    float *o_used = copyf(out_ref, nq);
    if (c->bf16) oh = to_bf16(o_used, nq);
    mf_tensor to = mf_tensor_make(c->bf16 ? (void *)oh : o_used, qt, MF_DEV_CPU, 4, sq);
    mf_tensor tdout = mf_tensor_make(dout, MF_F32, MF_DEV_CPU, 4, sq);
    float *dq0 = randf(nq, seed + 7, 0.5f), *dk0 = randf(nk, seed + 8, 0.5f),
          *dv0 = randf(nk, seed + 9, 0.5f), *db0 = randf(nb, seed + 10, 0.5f);
    float *dq_ref = copyf(dq0, nq), *dk_ref = copyf(dk0, nk), *dv_ref = copyf(dv0, nk),
          *db_ref = copyf(db0, nb);
    mf_tensor tdq = mf_tensor_make(dq_ref, MF_F32, MF_DEV_CPU, 4, sq);
    mf_tensor tdk = mf_tensor_make(dk_ref, MF_F32, MF_DEV_CPU, 4, sk);
    mf_tensor tdv = mf_tensor_make(dv_ref, MF_F32, MF_DEV_CPU, 4, sk);
    mf_tensor tdb = mf_tensor_make(db_ref, MF_F32, MF_DEV_CPU, 3, sb);
    MF_TEST_OK(mf_attention_backward(&g_ctx, &tdq, &tdk, &tdv, bias ? &tdb : NULL, &tdout, &to,
                                     &tlse, &tq, &tk, &tv, bias ? &tbias : NULL,
                                     mask ? &tmask : NULL, scale));
    float *dq = copyf(dq0, nq), *dk = copyf(dk0, nk), *dv = copyf(dv0, nk), *db = copyf(db0, nb);
    float *delta = nanf_array(nl);
    a.out = NULL;
    a.lse = NULL;
    a.dout = dout;
    a.o = to.data;
    a.o_bf16 = c->bf16;
    a.lse_in = lse_ref;
    a.delta = delta;
    a.dq = dq;
    a.dk = dk;
    a.dv = dv;
    each_row(&a, mf_attn_delta_row);
    each_row(&a, mf_attn_dq_row);
    each_row(&a, mf_attn_dkv_row);
    if (bias)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < Q; i++)
                for (int64_t j = 0; j < K; j++) {
                    float s = 0.0f;
                    for (int64_t b = 0; b < B; b++) s += mf_attn_ds(&a, b, h, i, j);
                    db[(h * Q + i) * K + j] += s;
                }
    check(c->name, "dq (accumulated)", dq, dq_ref, nq);
    check(c->name, "dk (accumulated)", dk, dk_ref, nk);
    check(c->name, "dv (accumulated)", dv, dv_ref, nk);
    if (bias) check(c->name, "dbias (accumulated)", db, db_ref, nb);

    /* dk alone and dv alone (the other NULL) give the same values as together */
    float *dk_only = copyf(dk0, nk), *dv_only = copyf(dv0, nk);
    a.dq = NULL;
    a.dk = dk_only;
    a.dv = NULL;
    each_row(&a, mf_attn_dkv_row);
    a.dk = NULL;
    a.dv = dv_only;
    each_row(&a, mf_attn_dkv_row);
    char nm[160];
    snprintf(nm, sizeof nm, "%s: dk without dv", c->name);
    mf_check_bitwise_f32(nm, dk_only, dk, nk);
    snprintf(nm, sizeof nm, "%s: dv without dk", c->name);
    mf_check_bitwise_f32(nm, dv_only, dv, nk);

    float *all[] = {q,      k,      v,   dout, bias, mask,  out_ref, lse_ref, out,
                    lse,    o_used, dq0, dk0,  dv0,  db0,   dq_ref,  dk_ref,  dv_ref,
                    db_ref, dq,     dk,  dv,   db,   delta, dk_only, dv_only};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]);
    free(qh);
    free(kh);
    free(vh);
    free(oh);
}

int main(void)
{
    if (mf_test_ctx_cpu(&g_ctx, &g_arena, (size_t)64 << 20) != MF_OK) {
        fprintf(stderr, "test_attention_rows: %s\n", mf_last_error());
        return 1;
    }
    const rows_case cases[] = {
        {"D 8, bias, mask", 3, 37, 45, 2, 8, true, true, false, false},
        {"D 32, bias", 2, 33, 33, 4, 32, true, false, false, false},
        {"D 40 (two slices), mask", 2, 21, 35, 3, 40, false, true, false, false},
        {"D 16, fully masked row, bias", 3, 19, 23, 2, 16, true, true, true, false},
        {"cross attention Q 1, K 5", 7, 1, 5, 4, 16, false, true, false, false},
        {"bf16 q, k, v, o; D 24, bias, mask", 2, 29, 31, 3, 24, true, true, false, true},
        {"D 1, no bias, no mask", 2, 9, 11, 1, 1, false, false, false, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i], 100 * i);
    mf_test_ctx_free(&g_ctx, &g_arena);
    return mf_test_finish("test_attention_rows");
}
