/* Invariant point attention (Alg. 22; structure_module/ipa.h):
 *  1. the reference vector invariant_point_attention.h5 through mf_verify_invariant_point_attention
 *     (max|c - r| / max|r| <= 1e-5, masked row 3 of the output skipped, attention_2d//bias
 *     compared absolutely, as the file says);
 *  2. the double reference's backward against central finite differences for s, z, rot, trans and
 *     all 13 parameters (odd sizes N 5, c_s 7, c_z 5, 2 heads, c 3, c_v 4, 2 + 3 points, random
 *     upstream gradient): with a mask containing zeros (upstream gradient zero on the masked
 *     query rows: their logits carry -1e5, which leaves double ~5 digits of a finite difference
 *     there) and with no mask (every row);
 *  3. the f32 module (forward accumulating onto nonzero outputs, backward accumulating onto
 *     nonzero gradients) against the double reference, N 11 with a masked residue, chunk sizes
 *     {0, 1, 3, 64} (f32 tolerance MF_TOL_F32_*; the masked query rows get no upstream gradient
 *     and their outputs are checked in 7); chunked against unchunked: forward bitwise, gradients
 *     within 1e-6 absolute + 1e-5 relative (the point-weight and attention_2d gradients are summed
 *     slice by slice; everything else comes out bitwise); inference (saved NULL) against the
 *     training forward, bitwise;
 *  4. the arena: back at its mark after inference, exactly the saved tensors left after a training
 *     forward, back there after backward; arenas of 4..128 KiB: out-of-memory reported with
 *     nothing left allocated (saved tensors included), a wrong parameter shape named;
 *  5. bf16 storage (forward bitwise unchanged) and bf16 compute against f32, max-relative per
 *     tensor within MF_TOL_BF16_RTOL;
 *  6. invariance under a global rotation + translation of the frames: outputs and the gradients
 *     of s, z and the weights unchanged, drot and dtrans rotated with the frames;
 *  7. masked residues: unmasked rows' outputs bitwise independent of a masked residue's inputs,
 *     the masked residue's gradients exactly zero when its own output row gets no gradient, and
 *     the masked query row (every logit shifted by -1e5) equal to attention without the mask. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data/testvector.h"
#include "structure_module/ipa.h"
#include "structure_module/rigid.h"
#include "structure_module/verify_ipa.h"
#include "tests/support/mf_test.h"

#define NP MF_IPA_NUM_PARAMS

/* Invariance in f32 with frames moved by ~30 internal units (300 A): the global points grow to
 * |x| ~ 30, so their f32 rounding (~2e-6 absolute) enters the logits through differences of
 * points ~1 apart; outputs and gradients stay within 5e-5 absolute + 5e-4 relative. */
#define TOL_INVARIANCE_ATOL 5e-5
#define TOL_INVARIANCE_RTOL 5e-4
/* The masked query row in f32: logits near -1e5 keep ~3 significant digits after the shift
 * (f32 spacing at 1e5 is 7.8e-3), so the row's attention weights are off by up to ~1% relative. */
#define TOL_MASKED_ROW_F32 3e-2
/* The same row in double: spacing at 1e5 is 1.5e-11. */
#define TOL_MASKED_ROW_F64 1e-8

typedef struct {
    mf_ipa_dims d;
    int64_t N;
    mf_param_spec spec[NP];
    int64_t wn[NP];
    double *s, *z, *rot, *trans, *mask, *w[NP], *out;
} ipa_case;

static double *dalloc(int64_t n)
{
    return calloc((size_t)(n > 0 ? n : 1), sizeof(double));
}

static float *falloc(int64_t n)
{
    return calloc((size_t)(n > 0 ? n : 1), sizeof(float));
}

static int64_t spec_numel(const mf_param_spec *s)
{
    int64_t n = 1;
    for (int k = 0; k < s->ndim; k++) n *= s->shape[k];
    return n;
}

static void random_rotations(double *rot, int64_t n, uint64_t seed)
{
    double *q = dalloc(4 * n);
    mf_test_fill_normal_f64(q, 4 * n, seed, 1.0);
    mf_quat_normalize_f64(q, q, n);
    mf_quat_to_rot_f64(rot, q, n);
    free(q);
}

/* masked: residues 1 and N-2 masked (N >= 4); else all ones. */
static void case_init(ipa_case *c, int64_t N, mf_ipa_dims d, bool masked, uint64_t seed)
{
    memset(c, 0, sizeof *c);
    c->d = d;
    c->N = N;
    mf_ipa_param_specs(&d, c->spec);
    c->s = dalloc(N * d.c_s);
    c->z = dalloc(N * N * d.c_z);
    c->rot = dalloc(N * 9);
    c->trans = dalloc(N * 3);
    c->mask = dalloc(N);
    c->out = dalloc(N * d.c_s);
    mf_test_fill_normal_f64(c->s, N * d.c_s, seed + 1, 1.0);
    mf_test_fill_normal_f64(c->z, N * N * d.c_z, seed + 2, 1.0);
    random_rotations(c->rot, N, seed + 3);
    mf_test_fill_normal_f64(c->trans, N * 3, seed + 4, 1.5);
    for (int64_t i = 0; i < N; i++) c->mask[i] = masked && (i == 1 || i == N - 2) ? 0.0 : 1.0;
    for (int k = 0; k < NP; k++) {
        c->wn[k] = spec_numel(&c->spec[k]);
        c->w[k] = dalloc(c->wn[k]);
        /* weights of LeCun size (output projection included, so gradients reach everything),
         * small random biases and point weights around softplus^-1(1) */
        bool bias = c->spec[k].ndim == 1;
        double sd = bias ? 0.3 : 1.0 / sqrt((double)c->spec[k].shape[0]);
        mf_test_fill_normal_f64(c->w[k], c->wn[k], seed + 10 + (uint64_t)k, sd);
        if (!strcmp(c->spec[k].name, "/trainable_point_weights"))
            for (int64_t h = 0; h < c->wn[k]; h++) c->w[k][h] += log(expm1(1.0));
    }
}

static void case_free(ipa_case *c)
{
    free(c->s), free(c->z), free(c->rot), free(c->trans), free(c->mask), free(c->out);
    for (int k = 0; k < NP; k++) free(c->w[k]);
}

static void case_fwd(void *ud)
{
    ipa_case *c = ud;
    mf_ipa_reference_forward_f64(c->out, c->s, c->z, c->rot, c->trans, c->mask,
                                 (const double *const *)c->w, &c->d, c->N);
}

/* Reference gradients: g[0..3] = ds, dz, drot, dtrans, g[4 + k] = dw[k]; zero-initialised. */
typedef struct {
    double *ds, *dz, *drot, *dtrans, *dw[NP];
} ipa_grads64;

static void grads64_alloc(ipa_grads64 *g, const ipa_case *c)
{
    g->ds = dalloc(c->N * c->d.c_s);
    g->dz = dalloc(c->N * c->N * c->d.c_z);
    g->drot = dalloc(c->N * 9);
    g->dtrans = dalloc(c->N * 3);
    for (int k = 0; k < NP; k++) g->dw[k] = dalloc(c->wn[k]);
}

static void grads64_free(ipa_grads64 *g)
{
    free(g->ds), free(g->dz), free(g->drot), free(g->dtrans);
    for (int k = 0; k < NP; k++) free(g->dw[k]);
}

static void ref_backward(const ipa_case *c, ipa_grads64 *g, const double *gout)
{
    bool ok = mf_ipa_reference_backward_f64(g->ds, g->dz, g->drot, g->dtrans, g->dw, gout, c->s,
                                            c->z, c->rot, c->trans, c->mask,
                                            (const double *const *)c->w, &c->d, c->N);
    MF_TEST_TRUE(ok, "reference backward: out of memory");
}

/* Random upstream gradient, zero on masked query rows. */
static double *make_gout(const ipa_case *c, uint64_t seed)
{
    double *g = dalloc(c->N * c->d.c_s);
    mf_test_fill_normal_f64(g, c->N * c->d.c_s, seed, 1.0);
    for (int64_t i = 0; i < c->N; i++)
        if (c->mask[i] == 0)
            for (int64_t k = 0; k < c->d.c_s; k++) g[i * c->d.c_s + k] = 0;
    return g;
}

static const mf_ipa_dims small_dims = {.c_s = 7,
                                       .c_z = 5,
                                       .num_head = 2,
                                       .num_scalar_qk = 3,
                                       .num_scalar_v = 4,
                                       .num_point_qk = 2,
                                       .num_point_v = 3};

/* ---- 1. reference vector ----------------------------------------------------------------- */

static void test_vectors(mf_ctx *ctx)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/testvectors/modules/invariant_point_attention.h5",
             mf_test_shared_dir());
    mf_module_vectors v;
    memset(&v, 0, sizeof v);
    mf_status st = mf_module_vectors_load(path, &v);
    MF_TEST_TRUE(st == MF_OK, "%s: %s", path, mf_last_error());
    if (st != MF_OK) return;
    MF_TEST_TRUE(!strcmp(v.module, "invariant_point_attention"), "module attribute is '%s'",
                 v.module);
    printf("invariant_point_attention.h5 (rtol %g):\n", v.rtol);
    mf_verify_report *r = calloc(1, sizeof *r);
    mf_arena_mark_t m = mf_arena_mark(ctx->arena);
    st = mf_verify_invariant_point_attention(ctx, &v, r);
    MF_TEST_TRUE(st == MF_OK, "verifier failed: %s", mf_last_error());
    MF_TEST_TRUE(mf_arena_used(ctx->arena) == m.offset, "verifier left arena memory allocated");
    for (int i = 0; i < r->count; i++) {
        const mf_compare_result *cr = &r->items[i].result;
        printf("  %-48s rel %.3e (max err %.3e, max |ref| %.3e) tol %.0e %s%s\n", r->items[i].name,
               cr->rel, cr->max_err, cr->max_ref, cr->tol, cr->absolute ? "absolute " : "",
               cr->pass ? "ok" : "FAIL");
        mf_test_count(cr->pass);
        if (!cr->pass) mf_test_fail("%s rel %.3e > %.0e", r->items[i].name, cr->rel, cr->tol);
    }
    int expected = v.outputs.count + v.grads_inputs.count + v.grads_weights.count;
    MF_TEST_TRUE(r->count == expected, "%d comparisons, the file has %d datasets", r->count,
                 expected);
    free(r);
    mf_module_vectors_free(&v);
}

/* ---- 2. finite differences in double ----------------------------------------------------- */

static void test_gradcheck(bool masked)
{
    ipa_case c;
    case_init(&c, 5, small_dims, masked, masked ? 500 : 600);
    double *gout = make_gout(&c, masked ? 599 : 699);
    ipa_grads64 g = {0};
    grads64_alloc(&g, &c);
    ref_backward(&c, &g, gout);
    mf_gc_array in[4 + NP];
    const double *grads[4 + NP];
    int n = 0;
    int64_t N = c.N;
    in[n] = (mf_gc_array){"s", c.s, N * c.d.c_s}, grads[n++] = g.ds;
    in[n] = (mf_gc_array){"z", c.z, N * N * c.d.c_z}, grads[n++] = g.dz;
    in[n] = (mf_gc_array){"rot", c.rot, N * 9}, grads[n++] = g.drot;
    in[n] = (mf_gc_array){"trans", c.trans, N * 3}, grads[n++] = g.dtrans;
    for (int k = 0; k < NP; k++)
        in[n] = (mf_gc_array){c.spec[k].name, c.w[k], c.wn[k]}, grads[n++] = g.dw[k];
    mf_gc_array outs[1] = {{"update", c.out, N * c.d.c_s}};
    const double *gouts[1] = {gout};
    char what[160];
    snprintf(what, sizeof what, "ref f64 IPA N5 c_s7 c_z5 H2 c3 c_v4 P2+3, %s",
             masked ? "residues 1, 3 masked" : "no mask");
    mf_gradcheck(what, case_fwd, &c, in, grads, n, outs, gouts, 1, MF_TOL_FD_STEP, MF_TOL_FD_ATOL,
                 MF_TOL_FD_RTOL, 0);
    grads64_free(&g);
    free(gout);
    case_free(&c);
}

/* ---- the f32 module ---------------------------------------------------------------------- */

typedef struct {
    float *s, *z, *rot, *trans, *mask, *w[NP], *gout;
} ipa_in32;

typedef struct {
    float *out, *ds, *dz, *drot, *dtrans, *dw[NP];
} ipa_res32;

static void in32_make(ipa_in32 *f, const ipa_case *c, const double *gout)
{
    int64_t N = c->N;
    f->s = falloc(N * c->d.c_s), f->z = falloc(N * N * c->d.c_z), f->rot = falloc(N * 9);
    f->trans = falloc(N * 3), f->mask = falloc(N), f->gout = falloc(N * c->d.c_s);
    mf_f64_to_f32(f->s, c->s, N * c->d.c_s);
    mf_f64_to_f32(f->z, c->z, N * N * c->d.c_z);
    mf_f64_to_f32(f->rot, c->rot, N * 9);
    mf_f64_to_f32(f->trans, c->trans, N * 3);
    mf_f64_to_f32(f->mask, c->mask, N);
    if (gout) mf_f64_to_f32(f->gout, gout, N * c->d.c_s);
    for (int k = 0; k < NP; k++) {
        f->w[k] = falloc(c->wn[k]);
        mf_f64_to_f32(f->w[k], c->w[k], c->wn[k]);
    }
}

static void in32_free(ipa_in32 *f)
{
    free(f->s), free(f->z), free(f->rot), free(f->trans), free(f->mask), free(f->gout);
    for (int k = 0; k < NP; k++) free(f->w[k]);
}

static void res32_alloc(ipa_res32 *r, const ipa_case *c)
{
    int64_t N = c->N;
    r->out = falloc(N * c->d.c_s), r->ds = falloc(N * c->d.c_s);
    r->dz = falloc(N * N * c->d.c_z), r->drot = falloc(N * 9), r->dtrans = falloc(N * 3);
    for (int k = 0; k < NP; k++) r->dw[k] = falloc(c->wn[k]);
}

static void res32_free(ipa_res32 *r)
{
    free(r->out), free(r->ds), free(r->dz), free(r->drot), free(r->dtrans);
    for (int k = 0; k < NP; k++) free(r->dw[k]);
}

#define PREFILL 0.25f

static void fill(float *x, int64_t n, float v)
{
    for (int64_t i = 0; i < n; i++) x[i] = v;
}

/* Runs the module: forward (accumulating onto PREFILL) with saved activations unless
 * inference_only, then backward (accumulating onto PREFILL). Checks the arena discipline. */
static void run_module(mf_ctx *ctx, const ipa_case *c, const ipa_in32 *f, ipa_res32 *r,
                       bool inference_only)
{
    const int64_t N = c->N;
    const mf_ipa_dims *d = &c->d;
    mf_ipa_params p, dp;
    for (int k = 0; k < NP; k++) {
        MF_PARAMS_AS_ARRAY(&p)
        [k] = mf_tensor_make(f->w[k], MF_F32, MF_DEV_CPU, c->spec[k].ndim, c->spec[k].shape);
        fill(r->dw[k], c->wn[k], PREFILL);
        MF_PARAMS_AS_ARRAY(&dp)
        [k] = mf_tensor_make(r->dw[k], MF_F32, MF_DEV_CPU, c->spec[k].ndim, c->spec[k].shape);
    }
    mf_tensor s = mf_tensor_f32(f->s, 2, N, d->c_s), z = mf_tensor_f32(f->z, 3, N, N, d->c_z);
    mf_tensor rot = mf_tensor_f32(f->rot, 3, N, 3, 3), trans = mf_tensor_f32(f->trans, 2, N, 3);
    mf_tensor mask = mf_tensor_f32(f->mask, 1, N), gout = mf_tensor_f32(f->gout, 2, N, d->c_s);
    mf_tensor out = mf_tensor_f32(r->out, 2, N, d->c_s), ds = mf_tensor_f32(r->ds, 2, N, d->c_s);
    mf_tensor dz = mf_tensor_f32(r->dz, 3, N, N, d->c_z), drot = mf_tensor_f32(r->drot, 3, N, 3, 3);
    mf_tensor dtrans = mf_tensor_f32(r->dtrans, 2, N, 3);
    fill(r->out, N * d->c_s, PREFILL);
    fill(r->ds, N * d->c_s, PREFILL), fill(r->dz, N * N * d->c_z, PREFILL);
    fill(r->drot, N * 9, PREFILL), fill(r->dtrans, N * 3, PREFILL);
    mf_arena *a = ctx->arena;
    mf_arena_mark_t m = mf_arena_mark(a);
    if (inference_only) {
        MF_TEST_OK(mf_ipa_forward(ctx, &out, true, NULL, &s, &z, &rot, &trans, &mask, &p, d));
        MF_TEST_TRUE(mf_arena_used(a) == m.offset, "inference forward left %zu bytes allocated",
                     mf_arena_used(a) - m.offset);
        return;
    }
    mf_ipa_saved sv;
    MF_TEST_OK(mf_ipa_forward(ctx, &out, true, &sv, &s, &z, &rot, &trans, &mask, &p, d));
    size_t expect = 0;
    const mf_tensor *st[6] = {&sv.q_scalar,       &sv.kv_scalar, &sv.q_point_local,
                              &sv.kv_point_local, &sv.attention, &sv.features};
    for (int k = 0; k < 6; k++)
        expect += (mf_tensor_bytes(st[k]) + MF_ARENA_ALIGN - 1) / MF_ARENA_ALIGN * MF_ARENA_ALIGN;
    size_t after_fwd = mf_arena_used(a);
    MF_TEST_TRUE(after_fwd - m.offset == expect,
                 "training forward left %zu bytes, the saved tensors take %zu",
                 after_fwd - m.offset, expect);
    MF_TEST_OK(mf_ipa_backward(ctx, &ds, &dz, &drot, &dtrans, &dp, &gout, &sv, &s, &z, &rot, &trans,
                               &p, d));
    MF_TEST_TRUE(mf_arena_used(a) == after_fwd, "backward changed the arena by %lld bytes",
                 (long long)mf_arena_used(a) - (long long)after_fwd);
    mf_arena_release(a, m);
}

/* Output rows of unmasked residues only (the masked query rows are compared in test 7). */
static void check_out_unmasked(const char *what, const float *out, const double *ref,
                               const ipa_case *c, double add, double atol, double rtol)
{
    int64_t CS = c->d.c_s, n = 0;
    double *e = dalloc(c->N * CS);
    float *o = falloc(c->N * CS);
    for (int64_t i = 0; i < c->N; i++) {
        if (c->mask[i] == 0) continue;
        for (int64_t k = 0; k < CS; k++, n++) e[n] = ref[i * CS + k] + add, o[n] = out[i * CS + k];
    }
    mf_check_close_f32_f64(what, o, e, n, atol, rtol);
    free(e), free(o);
}

static void check_grads_vs64(const char *tag, const ipa_res32 *r, const ipa_grads64 *g,
                             const ipa_case *c, double atol, double rtol)
{
    int64_t N = c->N;
    char name[200];
    struct {
        const char *n;
        const float *a;
        const double *b;
        int64_t len;
    } t[4] = {{"ds", r->ds, g->ds, N * c->d.c_s},
              {"dz", r->dz, g->dz, N * N * c->d.c_z},
              {"drot", r->drot, g->drot, N * 9},
              {"dtrans", r->dtrans, g->dtrans, N * 3}};
    for (int k = 0; k < 4 + NP; k++) {
        const char *nm = k < 4 ? t[k].n : c->spec[k - 4].name;
        const float *a = k < 4 ? t[k].a : r->dw[k - 4];
        const double *b = k < 4 ? t[k].b : g->dw[k - 4];
        int64_t len = k < 4 ? t[k].len : c->wn[k - 4];
        double *e = dalloc(len);
        for (int64_t i = 0; i < len; i++) e[i] = b[i] + PREFILL;
        snprintf(name, sizeof name, "%s %s", tag, nm);
        mf_check_close_f32_f64(name, a, e, len, atol, rtol);
        free(e);
    }
}

/* Bitwise or within (atol, rtol) for every output/gradient of two f32 runs. */
static void compare_runs(const char *tag, const ipa_res32 *a, const ipa_res32 *b, const ipa_case *c,
                         bool grads, bool bitwise_grads, double atol, double rtol)
{
    int64_t N = c->N;
    char name[200];
    snprintf(name, sizeof name, "%s update", tag);
    mf_check_bitwise_f32(name, a->out, b->out, N * c->d.c_s);
    if (!grads) return;
    const float *x[4] = {a->ds, a->dz, a->drot, a->dtrans},
                *y[4] = {b->ds, b->dz, b->drot, b->dtrans};
    const char *nm[4] = {"ds", "dz", "drot", "dtrans"};
    int64_t len[4] = {N * c->d.c_s, N * N * c->d.c_z, N * 9, N * 3};
    for (int k = 0; k < 4 + NP; k++) {
        const float *u = k < 4 ? x[k] : a->dw[k - 4], *v = k < 4 ? y[k] : b->dw[k - 4];
        int64_t n = k < 4 ? len[k] : c->wn[k - 4];
        snprintf(name, sizeof name, "%s %s", tag, k < 4 ? nm[k] : c->spec[k - 4].name);
        if (bitwise_grads)
            mf_check_bitwise_f32(name, u, v, n);
        else
            mf_check_close_f32(name, u, v, n, atol, rtol);
    }
}

/* bf16 runs against the f32 run with the reference vectors' metric, max|a - b| / max|b| per
 * tensor (PREFILL removed): weight gradients sum N products of two bf16-rounded factors and
 * elements that cancel to near zero have no element-wise relative bound, so each tensor is judged
 * against its own scale, within MF_TOL_BF16_RTOL. attention_2d//bias's gradient is exactly zero in
 * exact arithmetic (a per-head constant in the logits): it is compared absolutely against the
 * largest gradient of all tensors, as the reference vectors do. */
static void compare_maxrel_runs(const char *tag, const ipa_res32 *a, const ipa_res32 *b,
                                const ipa_case *c, double rtol)
{
    int64_t N = c->N;
    const float *x[5] = {a->out, a->ds, a->dz, a->drot, a->dtrans},
                *y[5] = {b->out, b->ds, b->dz, b->drot, b->dtrans};
    const char *nm[5] = {"update", "ds", "dz", "drot", "dtrans"};
    int64_t len[5] = {N * c->d.c_s, N * c->d.c_s, N * N * c->d.c_z, N * 9, N * 3};
    double grad_scale = 0;
    for (int k = 1; k < 5 + NP; k++) {
        const float *v = k < 5 ? y[k] : b->dw[k - 5];
        int64_t n = k < 5 ? len[k] : c->wn[k - 5];
        for (int64_t i = 0; i < n; i++) grad_scale = fmax(grad_scale, fabs(v[i] - PREFILL));
    }
    for (int k = 0; k < 5 + NP; k++) {
        const float *u = k < 5 ? x[k] : a->dw[k - 5], *v = k < 5 ? y[k] : b->dw[k - 5];
        int64_t n = k < 5 ? len[k] : c->wn[k - 5];
        float *uu = falloc(n), *vv = falloc(n);
        for (int64_t i = 0; i < n; i++) uu[i] = u[i] - PREFILL, vv[i] = v[i] - PREFILL;
        if (k == 0) /* the masked query rows: see test 7 */
            for (int64_t i = 0; i < N; i++)
                if (c->mask[i] == 0)
                    for (int64_t e = 0; e < c->d.c_s; e++)
                        uu[i * c->d.c_s + e] = vv[i * c->d.c_s + e];
        char name[200];
        if (k >= 5 && !strcmp(c->spec[k - 5].name, "attention_2d//bias")) {
            snprintf(name, sizeof name, "%s attention_2d//bias (absolute, grad scale %.3g)", tag,
                     grad_scale);
            mf_check_close_f32(name, uu, vv, n, rtol * grad_scale, 0);
        } else {
            snprintf(name, sizeof name, "%s %s (max-rel)", tag,
                     k < 5 ? nm[k] : c->spec[k - 5].name);
            mf_check_maxrel_f32(name, uu, vv, n, rtol);
        }
        free(uu), free(vv);
    }
}

/* ---- 3, 4. f32 against double, chunking, inference, arena -------------------------------- */

static const mf_ipa_dims mid_dims = {.c_s = 9,
                                     .c_z = 6,
                                     .num_head = 3,
                                     .num_scalar_qk = 4,
                                     .num_scalar_v = 5,
                                     .num_point_qk = 3,
                                     .num_point_v = 4};

static void test_f32(mf_ctx *ctx)
{
    ipa_case c;
    case_init(&c, 11, mid_dims, true, 700);
    double *gout = make_gout(&c, 799);
    ipa_grads64 g = {0};
    grads64_alloc(&g, &c);
    case_fwd(&c);
    ref_backward(&c, &g, gout);
    ipa_in32 f;
    in32_make(&f, &c, gout);
    ipa_res32 base, r;
    res32_alloc(&base, &c), res32_alloc(&r, &c);
    const int64_t chunks[4] = {0, 1, 3, 64};
    for (int k = 0; k < 4; k++) {
        ctx->policy.chunk_size = chunks[k];
        ipa_res32 *x = k == 0 ? &base : &r;
        run_module(ctx, &c, &f, x, false);
        char tag[64];
        snprintf(tag, sizeof tag, "f32 vs f64, chunk %lld:", (long long)chunks[k]);
        char otag[96];
        snprintf(otag, sizeof otag, "%s update (unmasked rows)", tag);
        check_out_unmasked(otag, x->out, c.out, &c, PREFILL, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
        check_grads_vs64(tag, x, &g, &c, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
        if (k > 0) {
            snprintf(tag, sizeof tag, "chunk %lld vs unchunked:", (long long)chunks[k]);
            /* gradients: the slices change the summation order of the point weights' and
             * attention_2d's gradients (summed slice by slice) */
            compare_runs(tag, x, &base, &c, true, false, 1e-6, 1e-5);
        }
        /* inference in slices against the training forward, bitwise */
        ipa_res32 inf;
        res32_alloc(&inf, &c);
        run_module(ctx, &c, &f, &inf, true);
        snprintf(tag, sizeof tag, "inference chunk %lld vs training:", (long long)chunks[k]);
        compare_runs(tag, &inf, x, &c, false, false, 0, 0);
        res32_free(&inf);
    }
    ctx->policy.chunk_size = 0;

    /* 5. bf16 storage of the saved activations and bf16 matrix inputs, against f32 */
    ctx->policy.storage = MF_BF16;
    run_module(ctx, &c, &f, &r, false);
    compare_runs("bf16 storage vs f32 (forward unchanged):", &r, &base, &c, false, false, 0, 0);
    compare_maxrel_runs("bf16 storage vs f32:", &r, &base, &c, MF_TOL_BF16_RTOL);
    ctx->policy.storage = MF_F32;
    ctx->policy.compute = MF_BF16;
    run_module(ctx, &c, &f, &r, false);
    compare_maxrel_runs("bf16 compute vs f32:", &r, &base, &c, MF_TOL_BF16_RTOL);
    ctx->policy.compute = MF_F32;

    res32_free(&base), res32_free(&r);
    in32_free(&f);
    grads64_free(&g);
    free(gout);
    case_free(&c);
}

/* 4. an arena too small: out of memory reported, nothing left allocated */
static void test_oom(void)
{
    ipa_case c;
    case_init(&c, 11, mid_dims, true, 900);
    ipa_in32 f;
    in32_make(&f, &c, NULL);
    mf_ipa_params p;
    for (int k = 0; k < NP; k++) MF_PARAMS_AS_ARRAY(&p)
    [k] = mf_tensor_make(f.w[k], MF_F32, MF_DEV_CPU, c.spec[k].ndim, c.spec[k].shape);
    int64_t N = c.N;
    float *o = falloc(N * c.d.c_s);
    mf_tensor s = mf_tensor_f32(f.s, 2, N, c.d.c_s), z = mf_tensor_f32(f.z, 3, N, N, c.d.c_z);
    mf_tensor rot = mf_tensor_f32(f.rot, 3, N, 3, 3), trans = mf_tensor_f32(f.trans, 2, N, 3);
    mf_tensor out = mf_tensor_f32(o, 2, N, c.d.c_s);
    mf_ctx ctx;
    mf_arena arena;
    /* arenas from too small for the saved tensors to large enough: each call either succeeds
     * (leaving exactly the saved tensors, or nothing at inference) or reports out of memory with
     * nothing left allocated */
    int n_nomem = 0, n_ok = 0;
    bool clean = true;
    for (size_t cap = 4096; cap <= ((size_t)1 << 17); cap += 4096) {
        MF_TEST_OK(mf_test_ctx_cpu(&ctx, &arena, cap));
        for (int train = 0; train < 2; train++) {
            mf_ipa_saved sv;
            ctx.policy.chunk_size = 3;
            mf_status st = mf_ipa_forward(&ctx, &out, false, train ? &sv : NULL, &s, &z, &rot,
                                          &trans, NULL, &p, &c.d);
            if (st == MF_ERR_NOMEM) {
                n_nomem++;
                clean &= mf_arena_used(&arena) == 0 && (!train || sv.attention.data == NULL);
            } else if (st == MF_OK) {
                n_ok++;
                clean &= train ? mf_arena_used(&arena) > 0 : mf_arena_used(&arena) == 0;
            } else {
                clean = false;
            }
            mf_arena_reset(&arena);
        }
        mf_test_ctx_free(&ctx, &arena);
    }
    MF_TEST_TRUE(clean && n_nomem > 0 && n_ok > 0,
                 "arena sweep: %d out-of-memory and %d successful calls, clean %d", n_nomem, n_ok,
                 (int)clean);
    printf("arena sweep 4..128 KiB: %d out-of-memory calls left nothing allocated, %d succeeded\n",
           n_nomem, n_ok);
    MF_TEST_OK(mf_test_ctx_cpu(&ctx, &arena, (size_t)1 << 20));
    /* a wrong parameter shape is named */
    MF_PARAMS_AS_ARRAY(&p)[0].shape[1] += 1;
    mf_status st = mf_ipa_forward(&ctx, &out, false, NULL, &s, &z, &rot, &trans, NULL, &p, &c.d);
    MF_TEST_TRUE(st != MF_OK && strstr(mf_last_error(), "q_scalar//weights"),
                 "wrong q_scalar shape: expected an error naming it, got '%s'", mf_last_error());
    printf("errors: wrong q_scalar//weights shape named\n");
    mf_test_ctx_free(&ctx, &arena);
    free(o);
    in32_free(&f);
    case_free(&c);
}

/* ---- 6. invariance under a global frame change ------------------------------------------- */

static void test_invariance(mf_ctx *ctx)
{
    ipa_case c, m;
    case_init(&c, 11, mid_dims, true, 1100);
    case_init(&m, 11, mid_dims, true, 1100);
    double Rg[9], tg[3] = {21.0, -17.0, 13.0}; /* |tg| ~ 30 internal units */
    random_rotations(Rg, 1, 1199);
    int64_t N = c.N;
    for (int64_t i = 0; i < N; i++) {
        for (int r = 0; r < 3; r++)
            for (int col = 0; col < 3; col++) {
                double acc = 0;
                for (int k = 0; k < 3; k++) acc += Rg[r * 3 + k] * c.rot[i * 9 + k * 3 + col];
                m.rot[i * 9 + r * 3 + col] = acc;
            }
        for (int r = 0; r < 3; r++) {
            double acc = tg[r];
            for (int k = 0; k < 3; k++) acc += Rg[r * 3 + k] * c.trans[i * 3 + k];
            m.trans[i * 3 + r] = acc;
        }
    }
    double *gout = make_gout(&c, 1198);
    /* double reference: exact invariance up to double rounding */
    case_fwd(&c), case_fwd(&m);
    mf_check_close_f64("invariance f64 ref: update", m.out, c.out, N * c.d.c_s, 1e-10, 1e-9);
    /* f32 module */
    ipa_in32 fc, fm;
    in32_make(&fc, &c, gout), in32_make(&fm, &m, gout);
    ipa_res32 rc, rm;
    res32_alloc(&rc, &c), res32_alloc(&rm, &c);
    run_module(ctx, &c, &fc, &rc, false);
    run_module(ctx, &m, &fm, &rm, false);
    const double at = TOL_INVARIANCE_ATOL, rt = TOL_INVARIANCE_RTOL;
    int64_t CS = c.d.c_s;
    /* outputs of unmasked rows (the masked rows' -1e5-shifted logits round differently) */
    for (int64_t i = 0; i < N; i++)
        if (c.mask[i] == 0)
            for (int64_t k = 0; k < CS; k++) rm.out[i * CS + k] = rc.out[i * CS + k];
    mf_check_close_f32("invariance f32: update (unmasked rows)", rm.out, rc.out, N * CS, at, rt);
    mf_check_close_f32("invariance f32: ds", rm.ds, rc.ds, N * CS, at, rt);
    mf_check_close_f32("invariance f32: dz", rm.dz, rc.dz, N * N * c.d.c_z, at, rt);
    for (int k = 0; k < NP; k++) {
        char name[128];
        snprintf(name, sizeof name, "invariance f32: %s", c.spec[k].name);
        mf_check_close_f32(name, rm.dw[k], rc.dw[k], c.wn[k], at, rt);
    }
    /* drot' = Rg drot, dtrans' = Rg dtrans (the gradients carry PREFILL: remove it first) */
    float *er = falloc(N * 9), *et = falloc(N * 3), *gr = falloc(N * 9), *gt = falloc(N * 3);
    for (int64_t i = 0; i < N; i++) {
        for (int r = 0; r < 3; r++) {
            for (int col = 0; col < 3; col++) {
                double acc = 0;
                for (int k = 0; k < 3; k++)
                    acc += Rg[r * 3 + k] * (rc.drot[i * 9 + k * 3 + col] - PREFILL);
                er[i * 9 + r * 3 + col] = (float)acc;
                gr[i * 9 + r * 3 + col] = rm.drot[i * 9 + r * 3 + col] - PREFILL;
            }
            double acc = 0;
            for (int k = 0; k < 3; k++) acc += Rg[r * 3 + k] * (rc.dtrans[i * 3 + k] - PREFILL);
            et[i * 3 + r] = (float)acc;
            gt[i * 3 + r] = rm.dtrans[i * 3 + r] - PREFILL;
        }
    }
    mf_check_close_f32("invariance f32: drot' = Rg drot", gr, er, N * 9, at, rt);
    mf_check_close_f32("invariance f32: dtrans' = Rg dtrans", gt, et, N * 3, at, rt);
    free(er), free(et), free(gr), free(gt);
    res32_free(&rc), res32_free(&rm);
    in32_free(&fc), in32_free(&fm);
    free(gout);
    case_free(&c), case_free(&m);
}

/* ---- 7. masked residues ------------------------------------------------------------------ */

static void test_masked(mf_ctx *ctx)
{
    ipa_case c, m;
    case_init(&c, 11, mid_dims, true, 1300);
    case_init(&m, 11, mid_dims, true, 1300);
    const int64_t N = c.N, CS = c.d.c_s, CZ = c.d.c_z, mres = 1; /* residue 1 is masked */
    /* m: residue 1's single representation, frame and pair rows/columns changed */
    for (int64_t k = 0; k < CS; k++) m.s[mres * CS + k] += 0.7 * (double)(k % 3) - 0.5;
    for (int64_t j = 0; j < N; j++)
        for (int64_t k = 0; k < CZ; k++) {
            m.z[(mres * N + j) * CZ + k] += 0.9;
            m.z[(j * N + mres) * CZ + k] -= 1.1;
        }
    random_rotations(m.rot + mres * 9, 1, 1398);
    for (int r = 0; r < 3; r++) m.trans[mres * 3 + r] += 2.5;
    double *gout = make_gout(&c, 1399);
    ipa_in32 fc, fm;
    in32_make(&fc, &c, gout), in32_make(&fm, &m, gout);
    ipa_res32 rc, rm;
    res32_alloc(&rc, &c), res32_alloc(&rm, &c);
    run_module(ctx, &c, &fc, &rc, false);
    run_module(ctx, &m, &fm, &rm, false);
    /* unmasked rows bitwise unchanged: masked keys get exp(-1e5 + ...) = 0 exactly */
    float *a = falloc(N * CS), *b = falloc(N * CS);
    int64_t n = 0;
    for (int64_t i = 0; i < N; i++)
        if (c.mask[i] != 0)
            for (int64_t k = 0; k < CS; k++, n++)
                a[n] = rm.out[i * CS + k], b[n] = rc.out[i * CS + k];
    mf_check_bitwise_f32("masked residue 1 changed: unmasked rows of update", a, b, n);
    free(a), free(b);
    /* with no gradient on its own row, a masked residue gets exactly zero gradient */
    float zero[64] = {0};
    for (int64_t k = 0; k < CS; k++) rc.ds[mres * CS + k] -= PREFILL;
    for (int k = 0; k < 9; k++) rc.drot[mres * 9 + k] -= PREFILL;
    for (int k = 0; k < 3; k++) rc.dtrans[mres * 3 + k] -= PREFILL;
    mf_check_bitwise_f32("masked residue: ds row", rc.ds + mres * CS, zero, CS);
    mf_check_bitwise_f32("masked residue: drot", rc.drot + mres * 9, zero, 9);
    mf_check_bitwise_f32("masked residue: dtrans", rc.dtrans + mres * 3, zero, 3);
    bool dz_zero = true;
    for (int64_t j = 0; j < N; j++)
        for (int64_t k = 0; k < CZ; k++) {
            dz_zero &= rc.dz[(mres * N + j) * CZ + k] == PREFILL;
            if (c.mask[j] != 0) dz_zero &= rc.dz[(j * N + mres) * CZ + k] == PREFILL;
        }
    MF_TEST_TRUE(dz_zero, "masked residue: dz of its pair row and of unmasked rows' column not "
                          "exactly zero");
    printf("masked residue: dz of pair row 1 and column 1 (unmasked queries) exactly zero: %s\n",
           dz_zero ? "ok" : "FAIL");
    /* the masked query row: every logit shifted by the same -1e5, so it equals attention without
     * the mask in exact arithmetic */
    ipa_case u;
    case_init(&u, 11, mid_dims, false, 1300);
    case_fwd(&c), case_fwd(&u);
    mf_check_close_f64("masked query row 1 (f64) vs unmasked attention", c.out + mres * CS,
                       u.out + mres * CS, CS, TOL_MASKED_ROW_F64, TOL_MASKED_ROW_F64);
    double *e = dalloc(CS);
    for (int64_t k = 0; k < CS; k++) e[k] = u.out[mres * CS + k] + PREFILL;
    mf_check_close_f32_f64("masked query row 1 (f32) vs unmasked attention", rc.out + mres * CS, e,
                           CS, TOL_MASKED_ROW_F32, TOL_MASKED_ROW_F32);
    free(e);
    res32_free(&rc), res32_free(&rm);
    in32_free(&fc), in32_free(&fm);
    free(gout);
    case_free(&c), case_free(&m), case_free(&u);
}

int main(void)
{
    mf_ctx ctx;
    mf_arena arena;
    if (mf_test_ctx_cpu(&ctx, &arena, (size_t)64 << 20) != MF_OK) {
        mf_test_fail("context: %s", mf_last_error());
        return mf_test_finish("test_ipa");
    }
    test_vectors(&ctx);
    test_gradcheck(true);
    test_gradcheck(false);
    test_f32(&ctx);
    test_oom();
    test_invariance(&ctx);
    test_masked(&ctx);
    mf_test_ctx_free(&ctx, &arena);
    return mf_test_finish("test_ipa");
}
