/* AlphaFold 2's gated attention module (mf_gated_attention_forward/backward; the `Attention`
 * module of Alg. 7, 8, 13, 14):
 *  1. the double reference's backward against central finite differences for every input and
 *     weight gradient (dq_x, dkv_x, dbias, query_w, key_w, value_w, gating_w, gating_b,
 *     output_w, output_b), gated and ungated, cross-attention (q_x != kv_x) and self-attention
 *     (one x: dq_x and dkv_x are the same buffer and the gradients add); odd sizes, a mask with
 *     zeros, a random upstream gradient;
 *  2. the f32 CPU op against the double reference for chunk sizes {0, 1, 3, 64} (forward with
 *     accumulate, every gradient accumulated onto nonzero buffers), chunked against unchunked;
 *  3. the inference path (saved NULL) against the training path's output (bitwise), the arena
 *     back at its mark (training: exactly the saved tensors left), a smaller peak when chunked;
 *  4. bf16 compute and bf16 storage of the saved activations against f32;
 *  5. an arena too small: out of memory reported, nothing left allocated;
 *  6. Alg. 7 composed around it against the msa_row_attention_with_pair_bias module vector. */
#include "core/ref/ref.h"
#include "data/testvector.h"
#include "model/module_verify.h"
#include "tests/support/mf_test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { W_QUERY, W_KEY, W_VALUE, W_GATING, W_GATING_B, W_OUTPUT, W_OUTPUT_B, NW };
static const char *const g_wname[NW] = {"query_w",  "key_w",    "value_w", "gating_w",
                                        "gating_b", "output_w", "output_b"};

typedef struct {
    int64_t B, Q, K, Cin, H, D, Cout;
    bool gated, self;
    double *q_x, *kv_x; /* kv_x == q_x for self-attention */
    double *bias, *mask, *w[NW], *out;
} ga_case;

static double *dalloc(int64_t n)
{
    return calloc((size_t)(n > 0 ? n : 1), sizeof(double));
}

static float *falloc(int64_t n)
{
    return calloc((size_t)(n > 0 ? n : 1), sizeof(float));
}

static int64_t w_numel(const ga_case *c, int i)
{
    int64_t HD = c->H * c->D;
    switch (i) {
    case W_GATING_B:
        return HD;
    case W_OUTPUT:
        return HD * c->Cout;
    case W_OUTPUT_B:
        return c->Cout;
    default:
        return c->Cin * HD;
    }
}

static void ga_init(ga_case *c, int64_t B, int64_t Q, int64_t K, int64_t Cin, int64_t H, int64_t D,
                    int64_t Cout, bool gated, bool self, uint64_t seed)
{
    *c = (ga_case){.B = B,
                   .Q = Q,
                   .K = self ? Q : K,
                   .Cin = Cin,
                   .H = H,
                   .D = D,
                   .Cout = Cout,
                   .gated = gated,
                   .self = self};
    K = c->K;
    c->q_x = dalloc(B * Q * Cin);
    mf_test_fill_normal_f64(c->q_x, B * Q * Cin, seed + 1, 1.0);
    if (self) {
        c->kv_x = c->q_x;
    } else {
        c->kv_x = dalloc(B * K * Cin);
        mf_test_fill_normal_f64(c->kv_x, B * K * Cin, seed + 2, 1.0);
    }
    c->bias = dalloc(H * Q * K);
    mf_test_fill_normal_f64(c->bias, H * Q * K, seed + 3, 1.0);
    c->mask = dalloc(B * K);
    mf_test_fill_mask_f64(c->mask, B, K, seed + 4, 0.7);
    for (int i = 0; i < NW; i++) {
        c->w[i] = dalloc(w_numel(c, i));
        /* weights of glorot size, so logits and gates stay O(1) */
        mf_test_fill_normal_f64(c->w[i], w_numel(c, i), seed + 10 + (uint64_t)i,
                                1.0 / sqrt((double)(i == W_OUTPUT ? H * D : Cin)));
    }
    c->out = dalloc(B * Q * Cout);
}

static void ga_free(ga_case *c)
{
    free(c->q_x);
    if (!c->self) free(c->kv_x);
    free(c->bias);
    free(c->mask);
    for (int i = 0; i < NW; i++) free(c->w[i]);
    free(c->out);
}

static void ga_fwd(void *ud)
{
    ga_case *c = ud;
    mf_ref_gated_attention_forward_f64(c->out, c->q_x, c->kv_x, c->bias, c->mask, c->w[W_QUERY],
                                       c->w[W_KEY], c->w[W_VALUE], c->gated ? c->w[W_GATING] : NULL,
                                       c->w[W_GATING_B], c->w[W_OUTPUT], c->w[W_OUTPUT_B], c->B,
                                       c->Q, c->K, c->Cin, c->H, c->D, c->Cout);
}

/* Reference gradients accumulated onto dq_x, dkv_x (the same buffer for self-attention), dbias
 * and dw[]. */
static void ga_ref_backward(const ga_case *c, double *dq_x, double *dkv_x, double *dbias,
                            double *dw[NW], const double *gout)
{
    mf_ref_gated_attention_backward_f64(
        dq_x, dkv_x, dbias, dw[W_QUERY], dw[W_KEY], dw[W_VALUE], c->gated ? dw[W_GATING] : NULL,
        c->gated ? dw[W_GATING_B] : NULL, dw[W_OUTPUT], dw[W_OUTPUT_B], gout, c->q_x, c->kv_x,
        c->bias, c->mask, c->w[W_QUERY], c->w[W_KEY], c->w[W_VALUE],
        c->gated ? c->w[W_GATING] : NULL, c->w[W_GATING_B], c->w[W_OUTPUT], c->w[W_OUTPUT_B], c->B,
        c->Q, c->K, c->Cin, c->H, c->D, c->Cout);
}

/* 1. */
static void test_gradcheck(bool gated, bool self)
{
    ga_case c;
    ga_init(&c, 3, 7, 5, 6, 2, 3, 5, gated, self, 1000 + 10 * gated + self);
    int64_t nq = c.B * c.Q * c.Cin, nk = c.B * c.K * c.Cin, nb = c.H * c.Q * c.K,
            no = c.B * c.Q * c.Cout;
    double *gout = dalloc(no), *dq_x = dalloc(nq), *dkv_x = self ? dq_x : dalloc(nk),
           *dbias = dalloc(nb), *dw[NW];
    for (int i = 0; i < NW; i++) dw[i] = dalloc(w_numel(&c, i));
    mf_test_fill_normal_f64(gout, no, 1099, 1.0);
    ga_ref_backward(&c, dq_x, dkv_x, dbias, dw, gout);

    mf_gc_array in[3 + NW];
    const double *grads[3 + NW];
    int n = 0;
    in[n] = (mf_gc_array){self ? "x (q_x = kv_x)" : "q_x", c.q_x, nq};
    grads[n++] = dq_x;
    if (!self) {
        in[n] = (mf_gc_array){"kv_x", c.kv_x, nk};
        grads[n++] = dkv_x;
    }
    in[n] = (mf_gc_array){"bias", c.bias, nb};
    grads[n++] = dbias;
    for (int i = 0; i < NW; i++) {
        if (!gated && (i == W_GATING || i == W_GATING_B)) continue;
        in[n] = (mf_gc_array){g_wname[i], c.w[i], w_numel(&c, i)};
        grads[n++] = dw[i];
    }
    mf_gc_array outs[1] = {{"out", c.out, no}};
    const double *gouts[1] = {gout};
    char what[128];
    snprintf(what, sizeof what, "ref f64 %s %s-attention B3 Q7 K%lld Cin6 H2 D3 Cout5",
             gated ? "gated" : "ungated", self ? "self" : "cross", (long long)c.K);
    mf_gradcheck(what, ga_fwd, &c, in, grads, n, outs, gouts, 1, MF_TOL_FD_STEP, MF_TOL_FD_ATOL,
                 MF_TOL_FD_RTOL, 0);
    free(gout);
    free(dq_x);
    if (!self) free(dkv_x);
    free(dbias);
    for (int i = 0; i < NW; i++) free(dw[i]);
    ga_free(&c);
}

/* f32 copies of a case and the CPU op's results. */
typedef struct {
    float *q_x, *kv_x, *bias, *mask, *w[NW], *dout;
} ga_f32_in;

typedef struct {
    float *out, *dq_x, *dkv_x, *dbias, *dw[NW];
} ga_f32_res;

static mf_tensor w_tensor(const ga_case *c, float *p, int i)
{
    switch (i) {
    case W_GATING_B:
        return mf_tensor_f32(p, 2, c->H, c->D);
    case W_OUTPUT:
        return mf_tensor_f32(p, 3, c->H, c->D, c->Cout);
    case W_OUTPUT_B:
        return mf_tensor_f32(p, 1, c->Cout);
    default:
        return mf_tensor_f32(p, 3, c->Cin, c->H, c->D);
    }
}

static mf_attention_params make_params(const ga_case *c, float *const w[NW], bool gated)
{
    mf_attention_params p = {0};
    p.query_w = w_tensor(c, w[W_QUERY], W_QUERY);
    p.key_w = w_tensor(c, w[W_KEY], W_KEY);
    p.value_w = w_tensor(c, w[W_VALUE], W_VALUE);
    if (gated) {
        p.gating_w = w_tensor(c, w[W_GATING], W_GATING);
        p.gating_b = w_tensor(c, w[W_GATING_B], W_GATING_B);
    }
    p.output_w = w_tensor(c, w[W_OUTPUT], W_OUTPUT);
    p.output_b = w_tensor(c, w[W_OUTPUT_B], W_OUTPUT_B);
    p.gated = gated;
    return p;
}

static size_t round_align(size_t n)
{
    return (n + MF_ARENA_ALIGN - 1) / MF_ARENA_ALIGN * MF_ARENA_ALIGN;
}

static size_t saved_bytes(const mf_attention_saved *s)
{
    const mf_tensor *t[6] = {&s->q, &s->k, &s->v, &s->gate, &s->o, &s->lse};
    size_t n = 0;
    for (int i = 0; i < 6; i++)
        if (t[i]->data) n += round_align(mf_tensor_bytes(t[i]));
    return n;
}

/* Runs forward (training, accumulate onto init_out) and backward (accumulating onto init_*). */
static void run_cpu(mf_ctx *ctx, const ga_case *c, const ga_f32_in *in, ga_f32_res *r,
                    const ga_f32_res *init, const char *what)
{
    int64_t B = c->B, Q = c->Q, K = c->K, no = B * Q * c->Cout;
    int64_t nq = B * Q * c->Cin, nk = B * K * c->Cin, nb = c->H * Q * K;
    r->out = falloc(no);
    memcpy(r->out, init->out, sizeof(float) * (size_t)no);
    r->dq_x = falloc(nq);
    memcpy(r->dq_x, init->dq_x, sizeof(float) * (size_t)nq);
    r->dkv_x = c->self ? r->dq_x : falloc(nk);
    if (!c->self) memcpy(r->dkv_x, init->dkv_x, sizeof(float) * (size_t)nk);
    r->dbias = falloc(nb);
    memcpy(r->dbias, init->dbias, sizeof(float) * (size_t)nb);
    for (int i = 0; i < NW; i++) {
        r->dw[i] = falloc(w_numel(c, i));
        memcpy(r->dw[i], init->dw[i], sizeof(float) * (size_t)w_numel(c, i));
    }
    mf_tensor tqx = mf_tensor_f32(in->q_x, 3, B, Q, c->Cin),
              tkvx = mf_tensor_f32(in->kv_x, 3, B, K, c->Cin),
              tb = mf_tensor_f32(in->bias, 3, c->H, Q, K), tm = mf_tensor_f32(in->mask, 2, B, K),
              tdo = mf_tensor_f32(in->dout, 3, B, Q, c->Cout),
              to = mf_tensor_f32(r->out, 3, B, Q, c->Cout),
              tdq = mf_tensor_f32(r->dq_x, 3, B, Q, c->Cin),
              tdkv = mf_tensor_f32(r->dkv_x, 3, B, K, c->Cin),
              tdb = mf_tensor_f32(r->dbias, 3, c->H, Q, K);
    mf_attention_params p = make_params(c, in->w, c->gated), dp = make_params(c, r->dw, c->gated);
    mf_attention_saved saved;
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    size_t used = mf_arena_used(ctx->arena);
    MF_TEST_OK(mf_gated_attention_forward(ctx, &to, &saved, &tqx, c->self ? &tqx : &tkvx, &tb, &tm,
                                          &p, true));
    size_t after_fwd = mf_arena_used(ctx->arena);
    MF_TEST_TRUE(after_fwd - used == saved_bytes(&saved),
                 "%s: forward left %zu arena bytes, the saved tensors take %zu", what,
                 after_fwd - used, saved_bytes(&saved));
    MF_TEST_OK(mf_gated_attention_backward(ctx, &tdq, c->self ? &tdq : &tdkv, &tdb, &dp, &tdo,
                                           &saved, &tqx, c->self ? &tqx : &tkvx, &tb, &tm, &p));
    MF_TEST_TRUE(mf_arena_used(ctx->arena) == after_fwd, "%s: backward left %zu arena bytes", what,
                 mf_arena_used(ctx->arena) - after_fwd);
    mf_arena_release(ctx->arena, mark);
}

static void free_res(const ga_case *c, ga_f32_res *r)
{
    free(r->out);
    free(r->dq_x);
    if (!c->self) free(r->dkv_x);
    free(r->dbias);
    for (int i = 0; i < NW; i++) free(r->dw[i]);
}

/* Compares every result of r with want (f32 results) or wantd (double) for one label. */
static void compare_res(const ga_case *c, const char *label, const ga_f32_res *r,
                        const ga_f32_res *want, const double *const *wantd, double atol,
                        double rtol, bool scale_atol)
{
    int64_t B = c->B, Q = c->Q, K = c->K;
    const char *names[3 + NW] = {"out", c->self ? "dx" : "dq_x", "dkv_x", "dbias"};
    const float *got[3 + NW + 1] = {r->out, r->dq_x, r->dkv_x, r->dbias};
    const float *wf[3 + NW + 1] = {0};
    int64_t n[3 + NW + 1] = {B * Q * c->Cout, B * Q * c->Cin, B * K * c->Cin, c->H * Q * K};
    if (want) {
        wf[0] = want->out;
        wf[1] = want->dq_x;
        wf[2] = want->dkv_x;
        wf[3] = want->dbias;
    }
    for (int i = 0; i < NW; i++) {
        got[4 + i] = r->dw[i];
        n[4 + i] = w_numel(c, i);
        if (want) wf[4 + i] = want->dw[i];
    }
    for (int f = 0; f < 4 + NW; f++) {
        if (f == 2 && c->self) continue;
        if (!c->gated && (f == 4 + W_GATING || f == 4 + W_GATING_B)) continue;
        char name[160];
        snprintf(name, sizeof name, "%s %s", label, f < 4 ? names[f] : g_wname[f - 4]);
        if (want && scale_atol) {
            /* a gradient summed over B*Q rows can cancel to far below its terms: the absolute
             * error of bf16 inputs follows the terms' size, so atol scales with max|ref| */
            double mx = 1;
            for (int64_t i = 0; i < n[f]; i++) mx = fmax(mx, fabs((double)wf[f][i]));
            snprintf(name, sizeof name, "%s %s (atol x max|ref| %.2f)", label,
                     f < 4 ? names[f] : g_wname[f - 4], mx);
            mf_check_close_f32(name, got[f], wf[f], n[f], atol * mx, rtol);
        } else if (want)
            mf_check_close_f32(name, got[f], wf[f], n[f], atol, rtol);
        else
            mf_check_close_f32_f64(name, got[f], wantd[f], n[f], atol, rtol);
    }
}

static const int64_t g_chunks[4] = {0, 1, 3, 64};

/* 2., 3., 4. for one configuration. */
static void test_cpu(mf_ctx *ctx, bool gated, bool self)
{
    ga_case c;
    ga_init(&c, 5, 19, 23, 12, 3, 8, 10, gated, self, 2000 + 10 * gated + self);
    int64_t B = c.B, Q = c.Q, K = c.K, Cin = c.Cin, H = c.H, Cout = c.Cout;
    int64_t nq = B * Q * Cin, nk = B * K * Cin, nb = H * Q * K, no = B * Q * Cout;
    const char *cfg =
        gated ? (self ? "gated self" : "gated cross") : (self ? "ungated self" : "ungated cross");

    /* f32 inputs, and the double case rounded to exactly those values */
    ga_f32_in in = {0};
    in.q_x = falloc(nq);
    mf_f64_to_f32(in.q_x, c.q_x, nq);
    mf_f32_to_f64(c.q_x, in.q_x, nq);
    if (self) {
        in.kv_x = in.q_x;
    } else {
        in.kv_x = falloc(nk);
        mf_f64_to_f32(in.kv_x, c.kv_x, nk);
        mf_f32_to_f64(c.kv_x, in.kv_x, nk);
    }
    in.bias = falloc(nb);
    mf_f64_to_f32(in.bias, c.bias, nb);
    mf_f32_to_f64(c.bias, in.bias, nb);
    in.mask = falloc(B * K);
    mf_f64_to_f32(in.mask, c.mask, B * K);
    for (int i = 0; i < NW; i++) {
        in.w[i] = falloc(w_numel(&c, i));
        mf_f64_to_f32(in.w[i], c.w[i], w_numel(&c, i));
        mf_f32_to_f64(c.w[i], in.w[i], w_numel(&c, i));
    }
    in.dout = falloc(no);
    mf_test_fill_normal_f32(in.dout, no, 2099, 1.0f);

    /* everything accumulates onto these */
    ga_f32_res init = {0};
    init.out = falloc(no);
    mf_test_fill_normal_f32(init.out, no, 2100, 1.0f);
    init.dq_x = falloc(nq);
    mf_test_fill_normal_f32(init.dq_x, nq, 2101, 1.0f);
    init.dkv_x = self ? init.dq_x : falloc(nk);
    if (!self) mf_test_fill_normal_f32(init.dkv_x, nk, 2102, 1.0f);
    init.dbias = falloc(nb);
    mf_test_fill_normal_f32(init.dbias, nb, 2103, 1.0f);
    for (int i = 0; i < NW; i++) {
        init.dw[i] = falloc(w_numel(&c, i));
        mf_test_fill_normal_f32(init.dw[i], w_numel(&c, i), 2110 + (uint64_t)i, 1.0f);
    }

    /* double reference: init + forward, init + gradients */
    double *ref[4 + NW];
    ga_fwd(&c);
    ref[0] = dalloc(no);
    mf_f32_to_f64(ref[0], init.out, no);
    for (int64_t i = 0; i < no; i++) ref[0][i] += c.out[i];
    ref[1] = dalloc(nq);
    mf_f32_to_f64(ref[1], init.dq_x, nq);
    ref[2] = self ? ref[1] : dalloc(nk);
    if (!self) mf_f32_to_f64(ref[2], init.dkv_x, nk);
    ref[3] = dalloc(nb);
    mf_f32_to_f64(ref[3], init.dbias, nb);
    for (int i = 0; i < NW; i++) {
        ref[4 + i] = dalloc(w_numel(&c, i));
        mf_f32_to_f64(ref[4 + i], init.dw[i], w_numel(&c, i));
    }
    double *gout = dalloc(no);
    mf_f32_to_f64(gout, in.dout, no);
    ga_ref_backward(&c, ref[1], ref[2], ref[3], ref + 4, gout);

    char label[160];
    ga_f32_res runs[4];
    for (int ci = 0; ci < 4; ci++) {
        ctx->policy.chunk_size = g_chunks[ci];
        snprintf(label, sizeof label, "cpu f32 %s chunk=%lld vs ref f64:", cfg,
                 (long long)g_chunks[ci]);
        run_cpu(ctx, &c, &in, &runs[ci], &init, label);
        compare_res(&c, label, &runs[ci], NULL, (const double *const *)ref, MF_TOL_F32_ATOL,
                    MF_TOL_F32_RTOL, false);
    }
    /* Chunked against unchunked: batch slices and query chunks change row counts only, so out,
     * dq_x (cross-attention) and dbias keep their bits (see test_attention.c); dkv_x and the
     * weight gradients sum over chunks or slices in a different grouping. */
    for (int ci = 1; ci < 4; ci++) {
        snprintf(label, sizeof label, "%s chunk=%lld vs unchunked:", cfg, (long long)g_chunks[ci]);
        char name[200];
        snprintf(name, sizeof name, "%s out", label);
        mf_check_bitwise_f32(name, runs[ci].out, runs[0].out, no);
        snprintf(name, sizeof name, "%s dbias", label);
        mf_check_bitwise_f32(name, runs[ci].dbias, runs[0].dbias, nb);
        if (!self) {
            snprintf(name, sizeof name, "%s dq_x", label);
            mf_check_bitwise_f32(name, runs[ci].dq_x, runs[0].dq_x, nq);
        }
        compare_res(&c, label, &runs[ci], &runs[0], NULL, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL, false);
    }

    /* 3. inference path against the training path's output, per chunk size */
    for (int ci = 0; ci < 4; ci++) {
        ctx->policy.chunk_size = g_chunks[ci];
        float *out = falloc(no);
        memcpy(out, init.out, sizeof(float) * (size_t)no);
        mf_tensor tqx = mf_tensor_f32(in.q_x, 3, B, Q, Cin),
                  tkvx = mf_tensor_f32(in.kv_x, 3, B, K, Cin),
                  tb = mf_tensor_f32(in.bias, 3, H, Q, K), tm = mf_tensor_f32(in.mask, 2, B, K),
                  to = mf_tensor_f32(out, 3, B, Q, Cout);
        mf_attention_params p = make_params(&c, in.w, gated);
        size_t used = mf_arena_used(ctx->arena);
        mf_arena_reset_peak(ctx->arena);
        MF_TEST_OK(mf_gated_attention_forward(ctx, &to, NULL, &tqx, &tkvx, &tb, &tm, &p, true));
        MF_TEST_TRUE(mf_arena_used(ctx->arena) == used, "inference left %zu arena bytes",
                     mf_arena_used(ctx->arena) - used);
        size_t peak = mf_arena_high_water(ctx->arena) - used;
        printf("  %s inference chunk=%lld: workspace peak %zu bytes\n", cfg,
               (long long)g_chunks[ci], peak);
        static size_t peak_unchunked;
        if (ci == 0) peak_unchunked = peak;
        if (g_chunks[ci] == 1)
            MF_TEST_TRUE(peak < peak_unchunked,
                         "chunk=1 inference peak %zu not below unchunked %zu", peak,
                         peak_unchunked);
        snprintf(label, sizeof label, "%s chunk=%lld inference (saved NULL) vs training out", cfg,
                 (long long)g_chunks[ci]);
        mf_check_bitwise_f32(label, out, runs[ci].out, no);
        free(out);
    }

    /* 4. bf16 compute, then bf16 storage, against f32 (chunk 3) */
    ctx->policy.chunk_size = 3;
    for (int mode = 0; mode < 2; mode++) {
        ga_f32_res r;
        if (mode == 0)
            ctx->policy.compute = MF_BF16;
        else
            ctx->policy.storage = MF_BF16;
        snprintf(label, sizeof label,
                 "cpu %s %s chunk=3 vs f32:", mode == 0 ? "bf16 compute" : "bf16 storage", cfg);
        run_cpu(ctx, &c, &in, &r, &init, label);
        ctx->policy.compute = MF_F32;
        ctx->policy.storage = MF_F32;
        compare_res(&c, label, &r, &runs[2], NULL, MF_TOL_BF16_ATOL, MF_TOL_BF16_RTOL, true);
        if (mode == 1) {
            /* the output is computed from f32 values before they are stored */
            snprintf(label, sizeof label, "cpu bf16 storage %s out vs f32 storage", cfg);
            mf_check_bitwise_f32(label, r.out, runs[2].out, no);
        }
        free_res(&c, &r);
    }
    ctx->policy.chunk_size = 0;

    for (int ci = 0; ci < 4; ci++) free_res(&c, &runs[ci]);
    free_res(&c, &init);
    free(in.q_x);
    if (!self) free(in.kv_x);
    free(in.bias);
    free(in.mask);
    for (int i = 0; i < NW; i++) free(in.w[i]);
    free(in.dout);
    for (int i = 0; i < 4 + NW; i++)
        if (!(i == 2 && self)) free(ref[i]);
    free(gout);
    ga_free(&c);
}

/* An arena too small for the saved tensors, or for the workspace after them: the op fails with
 * MF_ERR_NOMEM naming what, and leaves nothing allocated. */
static void test_out_of_memory(void)
{
    ga_case c;
    ga_init(&c, 5, 19, 23, 12, 3, 8, 10, true, false, 3000);
    int64_t B = c.B, Q = c.Q, K = c.K, nq = B * Q * c.Cin, nk = B * K * c.Cin;
    float *qx = falloc(nq), *kvx = falloc(nk), *bias = falloc(c.H * Q * K), *mask = falloc(B * K),
          *out = falloc(B * Q * c.Cout), *w[NW];
    mf_f64_to_f32(qx, c.q_x, nq);
    mf_f64_to_f32(kvx, c.kv_x, nk);
    mf_f64_to_f32(bias, c.bias, c.H * Q * K);
    mf_f64_to_f32(mask, c.mask, B * K);
    for (int i = 0; i < NW; i++) {
        w[i] = falloc(w_numel(&c, i));
        mf_f64_to_f32(w[i], c.w[i], w_numel(&c, i));
    }
    mf_tensor tqx = mf_tensor_f32(qx, 3, B, Q, c.Cin), tkvx = mf_tensor_f32(kvx, 3, B, K, c.Cin),
              tb = mf_tensor_f32(bias, 3, c.H, Q, K), tm = mf_tensor_f32(mask, 2, B, K),
              to = mf_tensor_f32(out, 3, B, Q, c.Cout);
    mf_attention_params p = make_params(&c, w, true);
    size_t caps[2] = {16 << 10, 64 << 10}; /* the saved tensors take about 50 KiB */
    for (int i = 0; i < 2; i++) {
        mf_ctx ctx;
        mf_arena arena;
        MF_TEST_OK(mf_test_ctx_cpu(&ctx, &arena, caps[i]));
        mf_attention_saved saved;
        mf_status st =
            mf_gated_attention_forward(&ctx, &to, &saved, &tqx, &tkvx, &tb, &tm, &p, false);
        printf("  arena of %zu KiB: %s (%s)\n", caps[i] >> 10, mf_status_name(st), mf_last_error());
        MF_TEST_TRUE(st == MF_ERR_NOMEM, "arena of %zu bytes: status %s, expected out of memory",
                     caps[i], mf_status_name(st));
        MF_TEST_TRUE(mf_arena_used(&arena) == 0 && saved.q.data == NULL,
                     "failed forward left %zu arena bytes", mf_arena_used(&arena));
        mf_test_ctx_free(&ctx, &arena);
    }
    free(qx);
    free(kvx);
    free(bias);
    free(mask);
    free(out);
    for (int i = 0; i < NW; i++) free(w[i]);
    ga_free(&c);
}

/* 6. Alg. 7 as a whole against shared/testvectors/modules/msa_row_attention_with_pair_bias.h5
 * (OpenFold, float32, rtol of the file): query_norm and feat_2d_norm layer norms (haiku eps 1e-5),
 * the pair bias einsum('qkc,ch->hqk', z, feat_2d_weights), AF2's 1e9 mask bias and the gated
 * attention above, forward and backward. The attention cannot be checked alone with this file. */
static void test_module_vector(mf_ctx *ctx)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/testvectors/modules/msa_row_attention_with_pair_bias.h5",
             mf_test_shared_dir());
    mf_module_vectors v;
    int failures_before = mf_test_failures();
    if (mf_module_vectors_load(path, &v) != MF_OK) {
        mf_test_fail("cannot load %s: %s", path, mf_last_error());
        return;
    }
    const int64_t S = 5, N = 7, Cm = 32, Cz = 16, H = 4, D = 8;
    const char *wn[] = {"attention||query_w",  "attention||key_w",     "attention||value_w",
                        "attention||gating_w", "attention||gating_b",  "attention||output_w",
                        "attention||output_b", "query_norm||scale",    "query_norm||offset",
                        "feat_2d_norm||scale", "feat_2d_norm||offset", "|feat_2d_weights"};
    enum { NWV = 12 };
    const mf_h5_array *w[NWV], *m, *z, *msk, *gout;
    int64_t sm[3] = {S, N, Cm}, sz[3] = {N, N, Cz}, smask[2] = {S, N};
    for (int i = 0; i < NWV; i++)
        MF_TEST_OK(mf_array_set_get(&v, &v.weights, "weights", wn[i], -1, NULL, &w[i]));
    MF_TEST_OK(mf_array_set_get(&v, &v.inputs, "inputs", "m", 3, sm, &m));
    MF_TEST_OK(mf_array_set_get(&v, &v.inputs, "inputs", "z", 3, sz, &z));
    MF_TEST_OK(mf_array_set_get(&v, &v.inputs, "inputs", "msa_mask", 2, smask, &msk));
    MF_TEST_OK(mf_array_set_get(&v, &v.grad_outputs, "grad_outputs", "update", 3, sm, &gout));
    if (mf_test_failures() > failures_before) {
        mf_module_vectors_free(&v);
        return;
    }
    float *dw[NWV];
    for (int i = 0; i < NWV; i++) dw[i] = falloc(mf_h5_array_numel(w[i]));
    float *m_ln = falloc(S * N * Cm), *m_mean = falloc(S * N), *m_rstd = falloc(S * N),
          *z_ln = falloc(N * N * Cz), *z_mean = falloc(N * N), *z_rstd = falloc(N * N),
          *b_qkh = falloc(N * N * H), *b_hqk = falloc(H * N * N), *upd = falloc(S * N * Cm),
          *dm_ln = falloc(S * N * Cm), *dm = falloc(S * N * Cm), *dz_ln = falloc(N * N * Cz),
          *dz = falloc(N * N * Cz), *db_hqk = falloc(H * N * N), *db_qkh = falloc(N * N * H);
    mf_tensor tm = mf_tensor_f32(m->data, 3, S, N, Cm), tz = mf_tensor_f32(z->data, 3, N, N, Cz),
              tmask = mf_tensor_f32(msk->data, 2, S, N),
              tgout = mf_tensor_f32(gout->data, 3, S, N, Cm);
    mf_tensor tm_ln = mf_tensor_f32(m_ln, 3, S, N, Cm), tm_mean = mf_tensor_f32(m_mean, 1, S * N),
              tm_rstd = mf_tensor_f32(m_rstd, 1, S * N), tz_ln = mf_tensor_f32(z_ln, 3, N, N, Cz),
              tz_mean = mf_tensor_f32(z_mean, 1, N * N), tz_rstd = mf_tensor_f32(z_rstd, 1, N * N);
    mf_tensor tq_s = mf_tensor_f32(w[7]->data, 1, Cm), tq_o = mf_tensor_f32(w[8]->data, 1, Cm),
              tf_s = mf_tensor_f32(w[9]->data, 1, Cz), tf_o = mf_tensor_f32(w[10]->data, 1, Cz),
              tf_w = mf_tensor_f32(w[11]->data, 2, Cz, H);
    mf_tensor tb_qkh = mf_tensor_f32(b_qkh, 3, N * N, H, 1),
              tb_hqk3 = mf_tensor_f32(b_hqk, 3, H, N * N, 1),
              tb_hqk = mf_tensor_f32(b_hqk, 3, H, N, N), tz2 = mf_tensor_f32(z_ln, 2, N * N, Cz),
              tb2 = mf_tensor_f32(b_qkh, 2, N * N, H), tupd = mf_tensor_f32(upd, 3, S, N, Cm);
    mf_attention_params p = {0}, dp = {0};
    mf_tensor *pf[7] = {&p.query_w,  &p.key_w,    &p.value_w, &p.gating_w,
                        &p.gating_b, &p.output_w, &p.output_b};
    mf_tensor *dpf[7] = {&dp.query_w,  &dp.key_w,    &dp.value_w, &dp.gating_w,
                         &dp.gating_b, &dp.output_w, &dp.output_b};
    for (int i = 0; i < 7; i++) {
        *pf[i] = mf_tensor_make(w[i]->data, MF_F32, MF_DEV_CPU, w[i]->ndim, w[i]->shape);
        *dpf[i] = mf_tensor_make(dw[i], MF_F32, MF_DEV_CPU, w[i]->ndim, w[i]->shape);
    }
    p.gated = dp.gated = true;
    MF_TEST_TRUE(p.query_w.ndim == 3 && p.query_w.shape[1] == H && p.query_w.shape[2] == D,
                 "query_w is not [%lld, %lld, %lld]", (long long)Cm, (long long)H, (long long)D);

    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_attention_saved saved;
    /* Alg. 7 lines 1-4 */
    MF_TEST_OK(mf_layer_norm_forward(ctx, &tm_ln, &tm_mean, &tm_rstd, &tm, &tq_s, &tq_o, 1e-5f));
    MF_TEST_OK(mf_layer_norm_forward(ctx, &tz_ln, &tz_mean, &tz_rstd, &tz, &tf_s, &tf_o, 1e-5f));
    MF_TEST_OK(mf_linear_forward(ctx, &tb2, &tz2, &tf_w, NULL, false));
    MF_TEST_OK(mf_transpose01(ctx, &tb_hqk3, &tb_qkh, false));
    /* lines 5-7 */
    MF_TEST_OK(
        mf_gated_attention_forward(ctx, &tupd, &saved, &tm_ln, &tm_ln, &tb_hqk, &tmask, &p, false));
    mf_tensor tdm_ln = mf_tensor_f32(dm_ln, 3, S, N, Cm),
              tdb_hqk = mf_tensor_f32(db_hqk, 3, H, N, N),
              tdb_hqk3 = mf_tensor_f32(db_hqk, 3, H, N * N, 1),
              tdb_qkh = mf_tensor_f32(db_qkh, 3, N * N, H, 1),
              tdb2 = mf_tensor_f32(db_qkh, 2, N * N, H), tdz2 = mf_tensor_f32(dz_ln, 2, N * N, Cz),
              tdz_ln = mf_tensor_f32(dz_ln, 3, N, N, Cz), tdm = mf_tensor_f32(dm, 3, S, N, Cm),
              tdz = mf_tensor_f32(dz, 3, N, N, Cz);
    mf_tensor tdq_s = mf_tensor_f32(dw[7], 1, Cm), tdq_o = mf_tensor_f32(dw[8], 1, Cm),
              tdf_s = mf_tensor_f32(dw[9], 1, Cz), tdf_o = mf_tensor_f32(dw[10], 1, Cz),
              tdf_w = mf_tensor_f32(dw[11], 2, Cz, H);
    MF_TEST_OK(mf_gated_attention_backward(ctx, &tdm_ln, &tdm_ln, &tdb_hqk, &dp, &tgout, &saved,
                                           &tm_ln, &tm_ln, &tb_hqk, &tmask, &p));
    mf_arena_release(ctx->arena, mark);
    MF_TEST_OK(mf_transpose01(ctx, &tdb_qkh, &tdb_hqk3, false));
    MF_TEST_OK(mf_linear_backward(ctx, &tdz2, &tdf_w, NULL, &tdb2, &tz2, &tf_w));
    MF_TEST_OK(
        mf_layer_norm_backward(ctx, &tdz, &tdf_s, &tdf_o, &tdz_ln, &tz, &tz_mean, &tz_rstd, &tf_s));
    MF_TEST_OK(
        mf_layer_norm_backward(ctx, &tdm, &tdq_s, &tdq_o, &tdm_ln, &tm, &tm_mean, &tm_rstd, &tq_s));

    mf_verify_report rep = {0};
    MF_TEST_OK(mf_verify_compare(&rep, &v, "outputs", "update", upd, S * N * Cm));
    MF_TEST_OK(mf_verify_compare(&rep, &v, "grads_inputs", "m", dm, S * N * Cm));
    MF_TEST_OK(mf_verify_compare(&rep, &v, "grads_inputs", "z", dz, N * N * Cz));
    for (int i = 0; i < NWV; i++)
        MF_TEST_OK(
            mf_verify_compare(&rep, &v, "grads_weights", wn[i], dw[i], mf_h5_array_numel(w[i])));
    for (int i = 0; i < rep.count; i++) {
        const mf_compare_result *r = &rep.items[i].result;
        printf("  Alg. 7 vector %-36s %s=%.3e  tol=%.0e  %s\n", rep.items[i].name,
               r->absolute ? "max|d|/grad_scale" : "max|d|/max|ref|", r->rel, r->tol,
               r->pass ? "ok" : "FAIL");
        MF_TEST_TRUE(r->pass, "Alg. 7 vector %s: %.3e > %.0e%s", rep.items[i].name, r->rel, r->tol,
                     r->nan ? " (NaN)" : "");
    }
    for (int i = 0; i < NWV; i++) free(dw[i]);
    float *bufs[] = {m_ln, m_mean, m_rstd, z_ln,  z_mean, z_rstd, b_qkh, b_hqk,
                     upd,  dm_ln,  dm,     dz_ln, dz,     db_hqk, db_qkh};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    mf_module_vectors_free(&v);
}

int main(void)
{
    for (int gated = 1; gated >= 0; gated--)
        for (int self = 0; self < 2; self++) test_gradcheck(gated, self);

    mf_ctx ctx;
    mf_arena arena;
    MF_TEST_OK(mf_test_ctx_cpu(&ctx, &arena, (size_t)64 << 20));
    if (mf_test_failures() == 0)
        for (int gated = 1; gated >= 0; gated--)
            for (int self = 0; self < 2; self++) test_cpu(&ctx, gated, self);
    test_module_vector(&ctx);
    mf_test_ctx_free(&ctx, &arena);
    test_out_of_memory();
    return mf_test_finish("test_gated_attention");
}
