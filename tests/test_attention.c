/* The multi-head attention core (mf_attention_forward/backward; Alg. 7 lines 5-6):
 *  1. the double reference's backward (dq, dk, dv, dbias) against central finite differences,
 *     with and without bias and mask, odd sizes, masks with zeros, random upstream gradient;
 *  2. the double reference's forward and lse against a naive softmax written in the test;
 *  3. the f32 CPU op against the double reference for chunk sizes {0, 1, 3, 64}, gradients
 *     accumulated onto nonzero buffers; chunked against unchunked (bitwise where the arithmetic
 *     order is unchanged); arena back at its mark after every op;
 *  4. bf16 compute against f32; bf16-stored q, k, v against f32 inputs rounded to bf16 (bitwise);
 *  5. shape errors are reported;
 *  6. fully masked rows (padded MSA rows): in f32 every logit is -1e9, the softmax uniform and the
 *     saved lse has lost log K; the forward and the backward of the CPU op (chunked and not) and
 *     of the f32 reference against the uniform softmax's own forward and backward, computed here
 *     in double (core/attention_mask.h: before the fix the gradients were K times too large). */
#include "core/ref/ref.h"
#include "tests/support/mf_test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Two double computations of the same quantity in a different order: a few ulps of the terms
 * (|logit| <~ 10, sums of <= 30 terms), far below any real error. */
#define TOL_F64_REORDER 1e-12

typedef struct {
    int64_t B, Q, K, H, D;
    double scale;
    double *q, *k, *v, *bias, *mask; /* bias, mask NULL when unused */
    double *out, *lse;
} core_case;

static double *dalloc(int64_t n)
{
    return calloc((size_t)(n > 0 ? n : 1), sizeof(double));
}

static float *falloc(int64_t n)
{
    return calloc((size_t)(n > 0 ? n : 1), sizeof(float));
}

static void core_case_init(core_case *c, int64_t B, int64_t Q, int64_t K, int64_t H, int64_t D,
                           bool with_bias, bool with_mask, uint64_t seed)
{
    *c = (core_case){.B = B, .Q = Q, .K = K, .H = H, .D = D, .scale = 0.41};
    c->q = dalloc(B * Q * H * D);
    c->k = dalloc(B * K * H * D);
    c->v = dalloc(B * K * H * D);
    c->out = dalloc(B * Q * H * D);
    c->lse = dalloc(B * H * Q);
    mf_test_fill_normal_f64(c->q, B * Q * H * D, seed + 1, 1.0);
    mf_test_fill_normal_f64(c->k, B * K * H * D, seed + 2, 1.0);
    mf_test_fill_normal_f64(c->v, B * K * H * D, seed + 3, 1.0);
    if (with_bias) {
        c->bias = dalloc(H * Q * K);
        mf_test_fill_normal_f64(c->bias, H * Q * K, seed + 4, 1.0);
    }
    if (with_mask) {
        c->mask = dalloc(B * K);
        mf_test_fill_mask_f64(c->mask, B, K, seed + 5, 0.7);
    }
}

static void core_case_free(core_case *c)
{
    free(c->q);
    free(c->k);
    free(c->v);
    free(c->bias);
    free(c->mask);
    free(c->out);
    free(c->lse);
}

static void core_fwd(void *ud)
{
    core_case *c = ud;
    mf_ref_attention_forward_f64(c->out, c->lse, c->q, c->k, c->v, c->bias, c->mask, c->B, c->Q,
                                 c->K, c->H, c->D, c->scale);
}

/* 1. */
static void test_gradcheck(bool with_bias, bool with_mask)
{
    core_case c;
    core_case_init(&c, 3, 7, 5, 2, 3, with_bias, with_mask, 100 + 10 * with_bias + with_mask);
    int64_t nq = c.B * c.Q * c.H * c.D, nk = c.B * c.K * c.H * c.D, nb = c.H * c.Q * c.K;
    double *gout = dalloc(nq), *dq = dalloc(nq), *dk = dalloc(nk), *dv = dalloc(nk),
           *dbias = dalloc(nb);
    mf_test_fill_normal_f64(gout, nq, 7, 1.0);
    mf_ref_attention_backward_f64(dq, dk, dv, with_bias ? dbias : NULL, gout, c.q, c.k, c.v, c.bias,
                                  c.mask, c.B, c.Q, c.K, c.H, c.D, c.scale);
    mf_gc_array in[4] = {{"q", c.q, nq}, {"k", c.k, nk}, {"v", c.v, nk}, {"bias", c.bias, nb}};
    const double *grads[4] = {dq, dk, dv, dbias};
    mf_gc_array outs[1] = {{"out", c.out, nq}};
    const double *gouts[1] = {gout};
    char what[96];
    snprintf(what, sizeof what, "ref f64 attention (bias %s, mask %s) B3 Q7 K5 H2 D3",
             with_bias ? "yes" : "no", with_mask ? "with zeros" : "no");
    mf_gradcheck(what, core_fwd, &c, in, grads, with_bias ? 4 : 3, outs, gouts, 1, MF_TOL_FD_STEP,
                 MF_TOL_FD_ATOL, MF_TOL_FD_RTOL, 0);
    free(gout);
    free(dq);
    free(dk);
    free(dv);
    free(dbias);
    core_case_free(&c);
}

/* 2. out and lse against softmax written out directly (no max shift: logits are O(1) and masked
 * ones give exp(-1e9) = 0). */
static void test_forward_naive(void)
{
    core_case c;
    core_case_init(&c, 3, 7, 5, 2, 3, true, true, 300);
    core_fwd(&c);
    int64_t B = c.B, Q = c.Q, K = c.K, H = c.H, D = c.D;
    double *lse = dalloc(B * H * Q), *out = dalloc(B * Q * H * D), *e = dalloc(K);
    int64_t masked = 0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < Q; i++) {
                double sum = 0;
                for (int64_t j = 0; j < K; j++) {
                    double dot = 0;
                    for (int64_t d = 0; d < D; d++)
                        dot +=
                            c.q[((b * Q + i) * H + h) * D + d] * c.k[((b * K + j) * H + h) * D + d];
                    double logit = c.scale * dot + c.bias[(h * Q + i) * K + j] +
                                   1e9 * (c.mask[b * K + j] - 1.0);
                    e[j] = exp(logit);
                    sum += e[j];
                    masked += c.mask[b * K + j] == 0.0;
                }
                lse[(b * H + h) * Q + i] = log(sum);
                for (int64_t d = 0; d < D; d++) {
                    double o = 0;
                    for (int64_t j = 0; j < K; j++)
                        o += e[j] / sum * c.v[((b * K + j) * H + h) * D + d];
                    out[((b * Q + i) * H + h) * D + d] = o;
                }
            }
    MF_TEST_TRUE(masked > 0, "the mask has no zeros");
    mf_check_close_f64("ref f64 lse vs log(sum(exp(logits)))", c.lse, lse, B * H * Q,
                       TOL_F64_REORDER, TOL_F64_REORDER);
    mf_check_close_f64("ref f64 out vs naive softmax(logits) v", c.out, out, B * Q * H * D,
                       TOL_F64_REORDER, TOL_F64_REORDER);

    /* The float reference (the CPU backend's twin) against the double one. */
    float *qf = falloc(B * Q * H * D), *kf = falloc(B * K * H * D), *vf = falloc(B * K * H * D),
          *bf = falloc(H * Q * K), *mf = falloc(B * K), *of = falloc(B * Q * H * D),
          *lf = falloc(B * H * Q);
    mf_f64_to_f32(qf, c.q, B * Q * H * D);
    mf_f64_to_f32(kf, c.k, B * K * H * D);
    mf_f64_to_f32(vf, c.v, B * K * H * D);
    mf_f64_to_f32(bf, c.bias, H * Q * K);
    mf_f64_to_f32(mf, c.mask, B * K);
    mf_ref_attention_forward_f32(of, lf, qf, kf, vf, bf, mf, B, Q, K, H, D, (float)c.scale);
    mf_check_close_f32_f64("ref f32 out vs ref f64", of, c.out, B * Q * H * D, MF_TOL_F32_ATOL,
                           MF_TOL_F32_RTOL);
    mf_check_close_f32_f64("ref f32 lse vs ref f64", lf, c.lse, B * H * Q, MF_TOL_F32_ATOL,
                           MF_TOL_F32_RTOL);
    free(qf);
    free(kf);
    free(vf);
    free(bf);
    free(mf);
    free(of);
    free(lf);
    free(lse);
    free(out);
    free(e);
    core_case_free(&c);
}

/* f32 copies of a case plus the CPU op's results. */
typedef struct {
    float *q, *k, *v, *bias, *mask, *dout;
    float *out, *lse, *dq, *dk, *dv, *dbias;
} cpu_run;

static const int64_t g_chunks[4] = {0, 1, 3, 64};

static void run_cpu(mf_ctx *ctx, const core_case *c, const cpu_run *in, cpu_run *r,
                    const float *grad_init[4], const char *what)
{
    int64_t B = c->B, Q = c->Q, K = c->K, H = c->H, D = c->D;
    int64_t nq = B * Q * H * D, nk = B * K * H * D, nb = H * Q * K;
    r->out = falloc(nq);
    r->lse = falloc(B * H * Q);
    r->dq = falloc(nq);
    r->dk = falloc(nk);
    r->dv = falloc(nk);
    r->dbias = falloc(nb);
    memcpy(r->dq, grad_init[0], sizeof(float) * (size_t)nq);
    memcpy(r->dk, grad_init[1], sizeof(float) * (size_t)nk);
    memcpy(r->dv, grad_init[2], sizeof(float) * (size_t)nk);
    memcpy(r->dbias, grad_init[3], sizeof(float) * (size_t)nb);
    mf_tensor tq = mf_tensor_f32(in->q, 4, B, Q, H, D), tk = mf_tensor_f32(in->k, 4, B, K, H, D),
              tv = mf_tensor_f32(in->v, 4, B, K, H, D), tb = mf_tensor_f32(in->bias, 3, H, Q, K),
              tm = mf_tensor_f32(in->mask, 2, B, K), tdo = mf_tensor_f32(in->dout, 4, B, Q, H, D);
    mf_tensor to = mf_tensor_f32(r->out, 4, B, Q, H, D), tl = mf_tensor_f32(r->lse, 3, B, H, Q),
              tdq = mf_tensor_f32(r->dq, 4, B, Q, H, D), tdk = mf_tensor_f32(r->dk, 4, B, K, H, D),
              tdv = mf_tensor_f32(r->dv, 4, B, K, H, D), tdb = mf_tensor_f32(r->dbias, 3, H, Q, K);
    size_t used = mf_arena_used(ctx->arena);
    MF_TEST_OK(mf_attention_forward(ctx, &to, &tl, &tq, &tk, &tv, &tb, &tm, (float)c->scale));
    MF_TEST_TRUE(mf_arena_used(ctx->arena) == used, "%s: forward left %zu arena bytes", what,
                 mf_arena_used(ctx->arena) - used);
    MF_TEST_OK(mf_attention_backward(ctx, &tdq, &tdk, &tdv, &tdb, &tdo, &to, &tl, &tq, &tk, &tv,
                                     &tb, &tm, (float)c->scale));
    MF_TEST_TRUE(mf_arena_used(ctx->arena) == used, "%s: backward left %zu arena bytes", what,
                 mf_arena_used(ctx->arena) - used);
}

static void free_run(cpu_run *r)
{
    free(r->out);
    free(r->lse);
    free(r->dq);
    free(r->dk);
    free(r->dv);
    free(r->dbias);
}

/* 3. and 4. */
static void test_cpu(mf_ctx *ctx)
{
    core_case c;
    core_case_init(&c, 2, 37, 29, 3, 8, true, true, 500);
    int64_t B = c.B, Q = c.Q, K = c.K, H = c.H, D = c.D;
    int64_t nq = B * Q * H * D, nk = B * K * H * D, nb = H * Q * K;
    cpu_run in = {0};
    in.q = falloc(nq);
    in.k = falloc(nk);
    in.v = falloc(nk);
    in.bias = falloc(nb);
    in.mask = falloc(B * K);
    in.dout = falloc(nq);
    /* the double reference sees exactly the f32 inputs */
    mf_f64_to_f32(in.q, c.q, nq);
    mf_f32_to_f64(c.q, in.q, nq);
    mf_f64_to_f32(in.k, c.k, nk);
    mf_f32_to_f64(c.k, in.k, nk);
    mf_f64_to_f32(in.v, c.v, nk);
    mf_f32_to_f64(c.v, in.v, nk);
    mf_f64_to_f32(in.bias, c.bias, nb);
    mf_f32_to_f64(c.bias, in.bias, nb);
    mf_f64_to_f32(in.mask, c.mask, B * K);
    mf_test_fill_normal_f32(in.dout, nq, 501, 1.0f);

    /* gradients accumulate onto these */
    float *init[4] = {falloc(nq), falloc(nk), falloc(nk), falloc(nb)};
    mf_test_fill_normal_f32(init[0], nq, 510, 1.0f);
    mf_test_fill_normal_f32(init[1], nk, 511, 1.0f);
    mf_test_fill_normal_f32(init[2], nk, 512, 1.0f);
    mf_test_fill_normal_f32(init[3], nb, 513, 1.0f);
    const float *grad_init[4] = {init[0], init[1], init[2], init[3]};

    double *gout = dalloc(nq), *rq = dalloc(nq), *rk = dalloc(nk), *rv = dalloc(nk),
           *rb = dalloc(nb);
    mf_f32_to_f64(gout, in.dout, nq);
    mf_f32_to_f64(rq, init[0], nq);
    mf_f32_to_f64(rk, init[1], nk);
    mf_f32_to_f64(rv, init[2], nk);
    mf_f32_to_f64(rb, init[3], nb);
    core_fwd(&c);
    mf_ref_attention_backward_f64(rq, rk, rv, rb, gout, c.q, c.k, c.v, c.bias, c.mask, B, Q, K, H,
                                  D, c.scale);

    cpu_run runs[4];
    char name[128];
    for (int ci = 0; ci < 4; ci++) {
        ctx->policy.chunk_size = g_chunks[ci];
        snprintf(name, sizeof name, "cpu f32 chunk=%lld", (long long)g_chunks[ci]);
        run_cpu(ctx, &c, &in, &runs[ci], grad_init, name);
        cpu_run *r = &runs[ci];
        const char *fields[6] = {"out",        "lse",        "dq (+init)",
                                 "dk (+init)", "dv (+init)", "dbias (+init)"};
        const float *got[6] = {r->out, r->lse, r->dq, r->dk, r->dv, r->dbias};
        const double *want[6] = {c.out, c.lse, rq, rk, rv, rb};
        int64_t n[6] = {nq, B * H * Q, nq, nk, nk, nb};
        for (int f = 0; f < 6; f++) {
            snprintf(name, sizeof name, "cpu f32 chunk=%lld %s vs ref f64 (B2 Q37 K29 H3 D8)",
                     (long long)g_chunks[ci], fields[f]);
            mf_check_close_f32_f64(name, got[f], want[f], n[f], MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
        }
    }
    /* Chunking changes only which query rows go into one matmul. oneDNN gives each row the same
     * bits whatever the number of rows, except for one-row products (a separate kernel), which
     * the CPU path never forms for Q > 1; so rows of out, lse, dq and dbias are bitwise equal.
     * dk and dv sum over query chunks in chunk order: equal up to rounding only. */
    for (int ci = 1; ci < 4; ci++) {
        cpu_run *a = &runs[ci], *z = &runs[0];
        snprintf(name, sizeof name, "chunk=%lld vs unchunked: ", (long long)g_chunks[ci]);
        char nm[160];
        snprintf(nm, sizeof nm, "%sout", name);
        mf_check_bitwise_f32(nm, a->out, z->out, nq);
        snprintf(nm, sizeof nm, "%slse", name);
        mf_check_bitwise_f32(nm, a->lse, z->lse, B * H * Q);
        snprintf(nm, sizeof nm, "%sdq", name);
        mf_check_bitwise_f32(nm, a->dq, z->dq, nq);
        snprintf(nm, sizeof nm, "%sdbias", name);
        mf_check_bitwise_f32(nm, a->dbias, z->dbias, nb);
        snprintf(nm, sizeof nm, "%sdk", name);
        mf_check_close_f32(nm, a->dk, z->dk, nk, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
        snprintf(nm, sizeof nm, "%sdv", name);
        mf_check_close_f32(nm, a->dv, z->dv, nk, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    }

    /* 4. bf16 matrix inputs against the f32 path. */
    for (int ci = 0; ci < 2; ci++) {
        ctx->policy.chunk_size = g_chunks[ci * 2];
        ctx->policy.compute = MF_BF16;
        cpu_run r;
        run_cpu(ctx, &c, &in, &r, grad_init, "cpu bf16 compute");
        ctx->policy.compute = MF_F32;
        const char *fields[6] = {"out", "lse", "dq", "dk", "dv", "dbias"};
        const float *got[6] = {r.out, r.lse, r.dq, r.dk, r.dv, r.dbias};
        const float *want[6] = {runs[0].out, runs[0].lse, runs[0].dq,
                                runs[0].dk,  runs[0].dv,  runs[0].dbias};
        int64_t n[6] = {nq, B * H * Q, nq, nk, nk, nb};
        for (int f = 0; f < 6; f++) {
            snprintf(name, sizeof name, "cpu bf16 compute chunk=%lld %s vs f32",
                     (long long)ctx->policy.chunk_size, fields[f]);
            mf_check_close_f32(name, got[f], want[f], n[f], MF_TOL_BF16_ATOL, MF_TOL_BF16_RTOL);
        }
        free_run(&r);
    }

    /* bf16-stored q, k, v (saved activations under storage=bf16) read as their f32 values. */
    {
        ctx->policy.chunk_size = 3;
        mf_bf16 *qb = malloc(sizeof(mf_bf16) * (size_t)nq),
                *kb = malloc(sizeof(mf_bf16) * (size_t)nk),
                *vb = malloc(sizeof(mf_bf16) * (size_t)nk);
        cpu_run rin = in;
        rin.q = falloc(nq);
        rin.k = falloc(nk);
        rin.v = falloc(nk);
        for (int64_t i = 0; i < nq; i++) {
            qb[i] = mf_f32_to_bf16(in.q[i]);
            rin.q[i] = mf_bf16_to_f32(qb[i]);
        }
        for (int64_t i = 0; i < nk; i++) {
            kb[i] = mf_f32_to_bf16(in.k[i]);
            rin.k[i] = mf_bf16_to_f32(kb[i]);
            vb[i] = mf_f32_to_bf16(in.v[i]);
            rin.v[i] = mf_bf16_to_f32(vb[i]);
        }
        cpu_run rf;
        run_cpu(ctx, &c, &rin, &rf, grad_init, "cpu f32 on bf16-rounded inputs");
        float *out = falloc(nq), *lse = falloc(B * H * Q), *dq = falloc(nq), *dk = falloc(nk),
              *dv = falloc(nk);
        mf_tensor tq = mf_tensor_4(qb, MF_BF16, MF_DEV_CPU, 4, B, Q, H, D),
                  tk = mf_tensor_4(kb, MF_BF16, MF_DEV_CPU, 4, B, K, H, D),
                  tv = mf_tensor_4(vb, MF_BF16, MF_DEV_CPU, 4, B, K, H, D),
                  tb = mf_tensor_f32(in.bias, 3, H, Q, K), tm = mf_tensor_f32(in.mask, 2, B, K),
                  tdo = mf_tensor_f32(in.dout, 4, B, Q, H, D),
                  to = mf_tensor_f32(out, 4, B, Q, H, D), tl = mf_tensor_f32(lse, 3, B, H, Q),
                  tdq = mf_tensor_f32(dq, 4, B, Q, H, D), tdk = mf_tensor_f32(dk, 4, B, K, H, D),
                  tdv = mf_tensor_f32(dv, 4, B, K, H, D);
        memcpy(dq, init[0], sizeof(float) * (size_t)nq);
        memcpy(dk, init[1], sizeof(float) * (size_t)nk);
        memcpy(dv, init[2], sizeof(float) * (size_t)nk);
        MF_TEST_OK(mf_attention_forward(ctx, &to, &tl, &tq, &tk, &tv, &tb, &tm, (float)c.scale));
        MF_TEST_OK(mf_attention_backward(ctx, &tdq, &tdk, &tdv, NULL, &tdo, &to, &tl, &tq, &tk, &tv,
                                         &tb, &tm, (float)c.scale));
        mf_check_bitwise_f32("bf16 q,k,v tensors: out vs f32 of the rounded values", out, rf.out,
                             nq);
        mf_check_bitwise_f32("bf16 q,k,v tensors: lse", lse, rf.lse, B * H * Q);
        mf_check_bitwise_f32("bf16 q,k,v tensors: dq", dq, rf.dq, nq);
        mf_check_bitwise_f32("bf16 q,k,v tensors: dk", dk, rf.dk, nk);
        mf_check_bitwise_f32("bf16 q,k,v tensors: dv", dv, rf.dv, nk);
        free(qb);
        free(kb);
        free(vb);
        free(rin.q);
        free(rin.k);
        free(rin.v);
        free(out);
        free(lse);
        free(dq);
        free(dk);
        free(dv);
        free_run(&rf);
    }

    /* 5. a shape error names the tensor */
    {
        mf_tensor tq = mf_tensor_f32(in.q, 4, B, Q, H, D), tk = mf_tensor_f32(in.k, 4, B, K, H, D),
                  tv = mf_tensor_f32(in.v, 4, B, K, H, D - 1),
                  to = mf_tensor_f32(runs[0].out, 4, B, Q, H, D);
        mf_status st = mf_attention_forward(ctx, &to, NULL, &tq, &tk, &tv, NULL, NULL, 1.0f);
        MF_TEST_TRUE(st == MF_ERR_INVALID && strstr(mf_last_error(), "v"),
                     "mismatched v shape not reported (status %d: %s)", (int)st, mf_last_error());
        printf("  shape error reported: %s\n", mf_last_error());
    }

    ctx->policy.chunk_size = 0;
    for (int ci = 0; ci < 4; ci++) free_run(&runs[ci]);
    for (int i = 0; i < 4; i++) free(init[i]);
    free(in.q);
    free(in.k);
    free(in.v);
    free(in.bias);
    free(in.mask);
    free(in.dout);
    free(gout);
    free(rq);
    free(rk);
    free(rv);
    free(rb);
    core_case_free(&c);
}

/* 6. */
static void test_fully_masked(mf_ctx *ctx)
{
    const int64_t B = 2, Q = 7, K = 13, H = 2, D = 5;
    const double scale = 0.41;
    const int64_t nq = B * Q * H * D, nk = B * K * H * D, nb = H * Q * K;
    float *q = falloc(nq), *k = falloc(nk), *v = falloc(nk), *bias = falloc(nb),
          *mask = falloc(B * K), *dout = falloc(nq);
    mf_test_fill_normal_f32(q, nq, 901, 1.0f);
    mf_test_fill_normal_f32(k, nk, 902, 1.0f);
    mf_test_fill_normal_f32(v, nk, 903, 1.0f);
    mf_test_fill_normal_f32(bias, nb, 904, 1.0f);
    mf_test_fill_normal_f32(dout, nq, 905, 1.0f);
    /* both batch elements fully masked: the rows of a padded MSA row */
    for (int64_t i = 0; i < B * K; i++) mask[i] = 0.0f;
    /* the uniform softmax's forward and backward (p = 1/K, constant: ds = p (dp - delta) with
     * delta = mean_k dp, as the f32 program's autodiff forms it) */
    double *eo = dalloc(nq), *edq = dalloc(nq), *edk = dalloc(nk), *edv = dalloc(nk),
           *edb = dalloc(nb);
    const double p = 1.0 / (double)K;
    for (int64_t b = 0; b < B; b++)
        for (int64_t qi = 0; qi < Q; qi++)
            for (int64_t h = 0; h < H; h++) {
                const int64_t qo = ((b * Q + qi) * H + h) * D;
                double dp[64], delta = 0;
                for (int64_t kj = 0; kj < K; kj++) {
                    const int64_t ko = ((b * K + kj) * H + h) * D;
                    dp[kj] = 0;
                    for (int64_t d = 0; d < D; d++) {
                        eo[qo + d] += p * v[ko + d];
                        dp[kj] += (double)dout[qo + d] * v[ko + d];
                    }
                    delta += p * dp[kj];
                }
                for (int64_t kj = 0; kj < K; kj++) {
                    const int64_t ko = ((b * K + kj) * H + h) * D;
                    const double ds = p * (dp[kj] - delta);
                    for (int64_t d = 0; d < D; d++) {
                        edv[ko + d] += p * dout[qo + d];
                        edq[qo + d] += scale * ds * k[ko + d];
                        edk[ko + d] += scale * ds * q[qo + d];
                    }
                    edb[(h * Q + qi) * K + kj] += ds;
                }
            }
    const int64_t chunks[2] = {0, 3};
    for (int ci = 0; ci < 3; ci++) {
        float *o = falloc(nq), *l = falloc(B * H * Q), *dq = falloc(nq), *dk = falloc(nk),
              *dv = falloc(nk), *db = falloc(nb);
        char what[96];
        if (ci < 2) {
            ctx->policy.chunk_size = chunks[ci];
            snprintf(what, sizeof what, "fully masked rows, cpu f32 chunk=%lld",
                     (long long)chunks[ci]);
            mf_tensor tq = mf_tensor_f32(q, 4, B, Q, H, D), tk = mf_tensor_f32(k, 4, B, K, H, D),
                      tv = mf_tensor_f32(v, 4, B, K, H, D), tb = mf_tensor_f32(bias, 3, H, Q, K),
                      tm = mf_tensor_f32(mask, 2, B, K), tdo = mf_tensor_f32(dout, 4, B, Q, H, D);
            mf_tensor to = mf_tensor_f32(o, 4, B, Q, H, D), tl = mf_tensor_f32(l, 3, B, H, Q),
                      tdq = mf_tensor_f32(dq, 4, B, Q, H, D),
                      tdk = mf_tensor_f32(dk, 4, B, K, H, D),
                      tdv = mf_tensor_f32(dv, 4, B, K, H, D), tdb = mf_tensor_f32(db, 3, H, Q, K);
            MF_TEST_OK(mf_attention_forward(ctx, &to, &tl, &tq, &tk, &tv, &tb, &tm, (float)scale));
            MF_TEST_OK(mf_attention_backward(ctx, &tdq, &tdk, &tdv, &tdb, &tdo, &to, &tl, &tq, &tk,
                                             &tv, &tb, &tm, (float)scale));
        } else {
            snprintf(what, sizeof what, "fully masked rows, f32 reference");
            mf_ref_attention_forward_f32(o, l, q, k, v, bias, mask, B, Q, K, H, D, (float)scale);
            mf_ref_attention_backward_f32(dq, dk, dv, db, dout, q, k, v, bias, mask, B, Q, K, H, D,
                                          (float)scale);
        }
        const char *fields[5] = {"out", "dq", "dk", "dv", "dbias"};
        const float *got[5] = {o, dq, dk, dv, db};
        const double *want[5] = {eo, edq, edk, edv, edb};
        const int64_t n[5] = {nq, nq, nk, nk, nb};
        for (int f = 0; f < 5; f++) {
            char nm[160];
            snprintf(nm, sizeof nm, "%s: %s vs the uniform softmax", what, fields[f]);
            mf_check_close_f32_f64(nm, got[f], want[f], n[f], MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
        }
        free(o), free(l), free(dq), free(dk), free(dv), free(db);
    }
    ctx->policy.chunk_size = 0;
    free(q), free(k), free(v), free(bias), free(mask), free(dout);
    free(eo), free(edq), free(edk), free(edv), free(edb);
}

int main(void)
{
    test_gradcheck(true, true);
    test_gradcheck(false, false);
    test_gradcheck(false, true);
    test_forward_naive();

    mf_ctx ctx;
    mf_arena arena;
    MF_TEST_OK(mf_test_ctx_cpu(&ctx, &arena, (size_t)64 << 20));
    if (mf_test_failures() == 0) test_cpu(&ctx);
    test_fully_masked(&ctx);
    mf_test_ctx_free(&ctx, &arena);
    return mf_test_finish("test_attention");
}
