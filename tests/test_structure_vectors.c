/* Structure-module pieces against the reference vectors (shared/testvectors/modules):
 * backbone_update.h5, structure_module_transition.h5, fape_clamped.h5 and fape_unclamped.h5
 * through their verifiers, every output and gradient compared with max|c - r| / max|r| <= the
 * file's rtol (1e-5), each comparison printed. Also the structure-module transition's own unit
 * checks at sizes that are not the file's (N 5, c_s 19): its gradients composed from the double
 * reference ops against finite differences, and the f32 op (forward and accumulating backward)
 * against that double composition. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/ref/ref.h"
#include "structure_module/sm_transition.h"
#include "structure_module/verify_structure.h"
#include "tests/support/mf_test.h"

static void run_file(mf_ctx *ctx, const char *file, const char *module, mf_module_verifier fn)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/testvectors/modules/%s", mf_test_shared_dir(), file);
    mf_module_vectors v;
    memset(&v, 0, sizeof v);
    mf_status st = mf_module_vectors_load(path, &v);
    MF_TEST_TRUE(st == MF_OK, "%s: %s", path, mf_last_error());
    if (st != MF_OK) return;
    MF_TEST_TRUE(!strcmp(v.module, module), "%s: module attribute is '%s', expected '%s'", file,
                 v.module, module);
    printf("%s (module %s, rtol %g):\n", file, v.module, v.rtol);
    mf_verify_report *r = calloc(1, sizeof *r);
    st = fn(ctx, &v, r);
    MF_TEST_TRUE(st == MF_OK, "%s verifier failed: %s", module, mf_last_error());
    for (int i = 0; i < r->count; i++) {
        const mf_verify_item *it = &r->items[i];
        const mf_compare_result *c = &it->result;
        printf("  %-48s rel %.3e (max err %.3e, max |ref| %.3e, %lld values) tol %.0e %s%s\n",
               it->name, c->rel, c->max_err, c->max_ref, (long long)c->n, c->tol,
               c->absolute ? "absolute " : "", c->pass ? "ok" : "FAIL");
        mf_test_count(c->pass);
        if (!c->pass) mf_test_fail("%s: %s rel %.3e > %.0e", file, it->name, c->rel, c->tol);
    }
    /* Every reference dataset must have been compared. */
    int expected = v.outputs.count + v.grads_inputs.count + v.grads_weights.count;
    MF_TEST_TRUE(r->count == expected, "%s: %d comparisons, the file has %d datasets to compare",
                 file, r->count, expected);
    free(r);
    mf_module_vectors_free(&v);
}

/* ---- transition composed from the double reference ops ------------------------------------ */

typedef struct {
    int64_t N, C;
    double *s, *w[3], *b[3], *scale, *offset, *act1, *act2, *pre, *mean, *rstd, *out;
} tr_case;

static void tr_fwd(void *ud)
{
    tr_case *c = ud;
    int64_t n = c->N * c->C;
    mf_ref_linear_forward_f64(c->act1, c->s, c->w[0], c->b[0], c->N, c->C, c->C, false);
    mf_ref_activation_forward_f64(0, c->act1, c->act1, n);
    mf_ref_linear_forward_f64(c->act2, c->act1, c->w[1], c->b[1], c->N, c->C, c->C, false);
    mf_ref_activation_forward_f64(0, c->act2, c->act2, n);
    mf_ref_linear_forward_f64(c->pre, c->act2, c->w[2], c->b[2], c->N, c->C, c->C, false);
    mf_ref_add_f64(c->pre, c->pre, c->s, n, n);
    mf_ref_layer_norm_forward_f64(c->out, c->mean, c->rstd, c->pre, c->scale, c->offset, c->N, c->C,
                                  MF_SM_TRANSITION_LN_EPS);
}

/* d = [ds, dw0, db0, dw1, db1, dw2, db2, dscale, doffset], accumulated. */
static void tr_bwd(tr_case *c, double **d, const double *dout)
{
    int64_t N = c->N, C = c->C, n = N * C;
    double *dpre = calloc((size_t)n, 8), *da = calloc((size_t)n, 8), *dl = calloc((size_t)n, 8);
    mf_ref_layer_norm_backward_f64(dpre, d[7], d[8], dout, c->pre, c->mean, c->rstd, c->scale, N,
                                   C);
    mf_ref_axpy_f64(d[0], 1.0, dpre, n);
    mf_ref_linear_backward_f64(da, d[5], d[6], dpre, c->act2, c->w[2], N, C, C);
    mf_ref_activation_backward_f64(0, dl, da, c->act2, n);
    memset(da, 0, sizeof(double) * (size_t)n);
    mf_ref_linear_backward_f64(da, d[3], d[4], dl, c->act1, c->w[1], N, C, C);
    memset(dl, 0, sizeof(double) * (size_t)n);
    mf_ref_activation_backward_f64(0, dl, da, c->act1, n);
    mf_ref_linear_backward_f64(d[0], d[1], d[2], dl, c->s, c->w[0], N, C, C);
    free(dpre), free(da), free(dl);
}

static double *normal_f64(int64_t n, uint64_t seed, double sd, double offset)
{
    double *p = malloc(sizeof(double) * (size_t)n);
    mf_test_fill_normal_f64(p, n, seed, sd);
    for (int64_t i = 0; i < n; i++) p[i] += offset;
    return p;
}

static float *rounded_f32(double *p, int64_t n)
{
    float *f = malloc(sizeof(float) * (size_t)n);
    mf_f64_to_f32(f, p, n);
    mf_f32_to_f64(p, f, n);
    return f;
}

static void test_transition_units(mf_ctx *ctx)
{
    const int64_t N = 5, C = 19, n = N * C;
    tr_case c = {.N = N, .C = C};
    c.s = normal_f64(n, 71, 1.0, 0.0);
    for (int k = 0; k < 3; k++) {
        c.w[k] = normal_f64(C * C, 72 + (uint64_t)k, 0.4, 0.0);
        c.b[k] = normal_f64(C, 75 + (uint64_t)k, 0.2, 0.0);
    }
    c.scale = normal_f64(C, 78, 0.3, 1.0);
    c.offset = normal_f64(C, 79, 0.3, 0.0);
    c.act1 = calloc((size_t)n, 8), c.act2 = calloc((size_t)n, 8), c.pre = calloc((size_t)n, 8);
    c.out = calloc((size_t)n, 8), c.mean = calloc((size_t)N, 8), c.rstd = calloc((size_t)N, 8);
    double *dout = normal_f64(n, 80, 1.0, 0.0);
    const int64_t len[9] = {n, C * C, C, C * C, C, C * C, C, C, C};
    double *pin[9] = {c.s, c.w[0], c.b[0], c.w[1], c.b[1], c.w[2], c.b[2], c.scale, c.offset};
    static const char *const names[9] = {"s",
                                         "transition//weights",
                                         "transition//bias",
                                         "transition_1//weights",
                                         "transition_1//bias",
                                         "transition_2//weights",
                                         "transition_2//bias",
                                         "transition_layer_norm//scale",
                                         "transition_layer_norm//offset"};
    float *p32[9], *dout32 = rounded_f32(dout, n);
    for (int k = 0; k < 9; k++) p32[k] = rounded_f32(pin[k], len[k]);
    double *d[9];
    for (int k = 0; k < 9; k++) d[k] = calloc((size_t)len[k], 8);
    tr_fwd(&c);
    /* The finite differences must not cross a ReLU kink: the smallest |pre-activation|. */
    double *pre = malloc(sizeof(double) * (size_t)n), kink = 1e300;
    mf_ref_linear_forward_f64(pre, c.s, c.w[0], c.b[0], N, C, C, false);
    for (int64_t i = 0; i < n; i++) kink = fmin(kink, fabs(pre[i]));
    mf_ref_linear_forward_f64(pre, c.act1, c.w[1], c.b[1], N, C, C, false);
    for (int64_t i = 0; i < n; i++) kink = fmin(kink, fabs(pre[i]));
    free(pre);
    printf("  smallest |ReLU input| %.2e (finite-difference step %.0e)\n", kink, MF_TOL_FD_STEP);
    MF_TEST_TRUE(kink > 1e-4, "a ReLU input within 1e-4 of the kink: pick another seed");
    tr_bwd(&c, d, dout);
    mf_gc_array in[9];
    for (int k = 0; k < 9; k++) in[k] = (mf_gc_array){names[k], pin[k], len[k]};
    mf_gc_array out[1] = {{"s_out", c.out, n}};
    const double *gout[1] = {dout};
    mf_gradcheck("structure-module transition (f64 reference ops, N 5, c_s 19)", tr_fwd, &c, in,
                 (const double *const *)d, 9, out, gout, 1, MF_TOL_FD_STEP, MF_TOL_FD_ATOL,
                 MF_TOL_FD_RTOL, 0);

    /* The f32 op: forward, and a backward accumulating onto nonzero gradients. */
    float *d32[9];
    for (int k = 0; k < 9; k++) {
        mf_test_fill_normal_f64(d[k], len[k], 90 + (uint64_t)k, 0.5);
        d32[k] = rounded_f32(d[k], len[k]);
    }
    tr_fwd(&c);
    tr_bwd(&c, d, dout);
    mf_sm_transition_params p = {mf_tensor_f32(p32[1], 2, C, C), mf_tensor_f32(p32[2], 1, C),
                                 mf_tensor_f32(p32[3], 2, C, C), mf_tensor_f32(p32[4], 1, C),
                                 mf_tensor_f32(p32[5], 2, C, C), mf_tensor_f32(p32[6], 1, C),
                                 mf_tensor_f32(p32[7], 1, C),    mf_tensor_f32(p32[8], 1, C)};
    mf_sm_transition_params dp = {mf_tensor_f32(d32[1], 2, C, C), mf_tensor_f32(d32[2], 1, C),
                                  mf_tensor_f32(d32[3], 2, C, C), mf_tensor_f32(d32[4], 1, C),
                                  mf_tensor_f32(d32[5], 2, C, C), mf_tensor_f32(d32[6], 1, C),
                                  mf_tensor_f32(d32[7], 1, C),    mf_tensor_f32(d32[8], 1, C)};
    float *out32 = malloc(sizeof(float) * (size_t)n);
    mf_tensor ts = mf_tensor_f32(p32[0], 2, N, C), tout = mf_tensor_f32(out32, 2, N, C);
    mf_tensor tds = mf_tensor_f32(d32[0], 2, N, C), tdout = mf_tensor_f32(dout32, 2, N, C);
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_sm_transition_saved saved;
    MF_TEST_OK(mf_sm_transition_forward(ctx, &tout, &saved, &ts, &p));
    MF_TEST_OK(mf_sm_transition_backward(ctx, &tds, &dp, &tdout, &saved, &ts, &p));
    mf_arena_release(ctx->arena, mark);
    mf_check_close_f32_f64("transition f32 op vs f64: s_out", out32, c.out, n, MF_TOL_F32_ATOL,
                           MF_TOL_F32_RTOL);
    for (int k = 0; k < 9; k++) {
        char what[128];
        snprintf(what, sizeof what, "transition f32 op vs f64: d%s (accumulated)", names[k]);
        mf_check_close_f32_f64(what, d32[k], d[k], len[k], MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    }
    /* Inference in place (s_out aliasing s) gives the same output; aliasing with saved is refused.
     */
    float *s_copy = malloc(sizeof(float) * (size_t)n);
    memcpy(s_copy, p32[0], sizeof(float) * (size_t)n);
    mf_tensor tcopy = mf_tensor_f32(s_copy, 2, N, C);
    size_t used = mf_arena_used(ctx->arena);
    MF_TEST_OK(mf_sm_transition_forward(ctx, &tcopy, NULL, &tcopy, &p));
    mf_check_bitwise_f32("transition inference in place = training forward", s_copy, out32, n);
    MF_TEST_TRUE(mf_arena_used(ctx->arena) == used, "inference left arena memory allocated");
    mf_status st = mf_sm_transition_forward(ctx, &tcopy, &saved, &tcopy, &p);
    printf("  training forward with s_out aliasing s -> %s: %s\n", mf_status_name(st),
           mf_last_error());
    MF_TEST_TRUE(st == MF_ERR_INVALID, "aliasing s_out and s with saved activations is refused");
    mf_clear_error();
    free(s_copy), free(out32), free(dout32), free(dout);
    for (int k = 0; k < 9; k++) free(p32[k]), free(d32[k]), free(d[k]);
    free(c.s), free(c.scale), free(c.offset), free(c.act1), free(c.act2), free(c.pre);
    free(c.out), free(c.mean), free(c.rstd);
    for (int k = 0; k < 3; k++) free(c.w[k]), free(c.b[k]);
}

int main(void)
{
    mf_ctx ctx;
    mf_arena arena;
    MF_TEST_OK(mf_test_ctx_cpu(&ctx, &arena, (size_t)16 << 20));
    run_file(&ctx, "backbone_update.h5", "backbone_update", mf_verify_backbone_update);
    run_file(&ctx, "structure_module_transition.h5", "structure_module_transition",
             mf_verify_structure_module_transition);
    run_file(&ctx, "fape_clamped.h5", "fape_clamped", mf_verify_fape);
    run_file(&ctx, "fape_unclamped.h5", "fape_unclamped", mf_verify_fape);
    test_transition_units(&ctx);
    mf_test_ctx_free(&ctx, &arena);
    return mf_test_finish("test_structure_vectors");
}
