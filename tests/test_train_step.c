/* One AlphaFold 2 training step (model/train_step.h, model/loss.h):
 *  1. the reference step: features.h5 + params_af2.npz (2 structure layers, AF2 fine-tuning
 *     losses) against train_expected.h5: every loss term and train output within 1e-4, each of
 *     the 336 gradients within 1e-3 (the three exactly-zero ones absolutely against grad_scale),
 *     the README's metric max|c - r| / max|r|; the arena back at its mark;
 *  2. memory policies on the same step: recompute block and every:2, in-place inference updates
 *     bitwise equal to the baseline (loss and all 121 498 gradient values); chunk 5 (no divisor
 *     of 24) and bf16 storage within the stated tolerances, per gradient array (max-rel); chunk 5
 *     with recompute block bitwise equal to chunk 5 alone;
 *  3. gradient accumulation (a second step into the same buffer doubles it, within f32 rounding
 *     of the sums), dropout (deterministic per seed, changes the loss, recompute block bitwise
 *     equal to off, another seed another loss);
 *  4. the dump written and checked against itself (exactly), a perturbed loss and a NaN gradient
 *     failing the check, a missing label named;
 *  5. the whole-model gradient check: a tiny random pTM configuration (odd sizes; every parameter
 *     perturbed so no 'final' zero layer blocks a path) on a 9-residue crop of features.h5 across
 *     its residue-index jump (3 MSA rows, 5 extra rows of which 3 fully masked, 2 templates, one
 *     with a masked residue), all 8 loss terms active: the trained iteration in f64 against
 *     central finite differences of loss/total on 2 elements (from different arrays) of each of
 *     45 modules (every sub-module of the three stacks and of the structure module's fold
 *     iteration, every embedder and head), with the recycled inputs and the structure module's
 *     inter-layer rotations held at the point (AF2's stop-gradients made explicit); then the f32
 *     step against the f64 step. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/rng.h"
#include "model/train_step.h"
#include "tests/support/mf_test.h"
#include "train/optimizer.h"
#include "tests/train_step_harness.inc"

/* Chunk 5 against unchunked: the earlier iteration's global column attention sums over sequence
 * chunks (its pair differs by ~1e-7 relative, test_model) and the template pair embedder's weight
 * gradient sums over row slices; f32 rounding differences reach the most sensitive gradient
 * arrays (pair_activiations, the angle resnet) at a few 1e-5 of their largest value (measured
 * 3.2e-5), the size of the reference's own float32 error (README: worst 5e-5). */
#define TOL_CHUNK 1e-4
/* A second step accumulated into a non-zero buffer: the modules add their contributions in
 * several steps (shared fold_iteration weights, stacked blocks, branches), so g1 + (a + b) is
 * formed as (g1 + a) + b: f32 rounding of the sums only (measured 1.2e-7). */
#define TOL_ACCUMULATE 1e-6
/* bf16 storage of every saved activation (8 significant bits, 3.9e-3 relative per stored value):
 * the forward still runs in f32 (the loss is bitwise the baseline's), the backward reads rounded
 * activations through ~40 modules. MF_TOL_BF16 (2e-2) bounds one op; measured over the 336
 * arrays: median 1.6e-3, worst 5.9e-2 (the Evoformer's triangle_attention_starting_node
 * feat_2d_weights, whose gradient is a sum with much cancellation). */
#define TOL_BF16_GRAD 1e-1
/* f32 against f64 on the tiny model: per-array max-rel of the gradients (f32 sums of a few
 * hundred terms through ~40 modules; measured 3e-5). */
#define TOL_F32_F64 1e-3

static void test_reference(mf_ctx *ctx, setup *s)
{
    printf("reference step against train_expected.h5 (loss 1e-4, gradients 1e-3)\n");
    const int64_t N = 24, L = 2;
    float *host = malloc(sizeof(float) * (size_t)(N * 111 + L * N * 7 + L * N * 42));
    mf_train_step_outputs outs = {
        .final_atom_positions = mf_tensor_f32(host, 3, N, 37, 3),
        .frames = mf_tensor_f32(host + N * 111, 3, L, N, 7),
        .positions = mf_tensor_f32(host + N * 111 + L * N * 7, 4, L, N, 14, 3),
    };
    mf_train_step_result res;
    const size_t before = mf_arena_used(ctx->arena);
    MF_TEST_OK(step(ctx, s, NULL, &res, &outs));
    MF_TEST_TRUE(mf_arena_used(ctx->arena) == before, "the step left arena allocations");
    printf("  arena peak %.2f MiB; loss/total %.6f; iterations %lld\n",
           (double)res.arena_peak / (1 << 20), res.loss.total, (long long)res.num_iterations);
    char path[1200];
    snprintf(path, sizeof path, "%s/train_expected.h5", g_dir);
    mf_train_check_report rep;
    MF_TEST_OK(mf_train_step_check(path, &res, &s->gb.views, &outs, &rep));
    print_check(&rep, false);
    int grads = 0;
    for (int i = 0; i < rep.count; i++) grads += !strncmp(rep.items[i].name, "grads/", 6);
    printf("  %d datasets compared (%d gradients), %d failed; worst loss %.3e, gradient %.3e, "
           "train outputs %.3e\n",
           rep.count, grads, rep.failed, rep.worst_loss, rep.worst_grad, rep.worst_output);
    MF_TEST_TRUE(grads == 336 && rep.count == 336 + 18 + 3,
                 "expected 336 gradients + 18 loss values + 3 outputs, got %d (%d)", rep.count,
                 grads);
    mf_train_check_report_free(&rep);
    free(host);
}

/* The trunk on a second CPU context: transfers, split arenas and the merged gradients, bitwise. */
static void test_trunk_cpu(mf_ctx *ctx, setup *s)
{
    mf_ctx tctx;
    mf_arena tarena;
    MF_TEST_OK(mf_test_ctx_cpu(&tctx, &tarena, (size_t)1 << 30));
    mf_train_step_result base;
    MF_TEST_OK(step(ctx, s, NULL, &base, NULL));
    float *grads = malloc(sizeof(float) * (size_t)s->gb.layout.total);
    memcpy(grads, s->gb.data, sizeof(float) * (size_t)s->gb.layout.total);
    check_trunk_step(ctx, s, &tctx, &base, grads, 0.0, "a second CPU context");
    /* block recomputation on the trunk with its checkpoints offloaded to the host context's
     * arena: recompute block is bitwise recompute off on the CPU */
    tctx.policy.recompute = MF_RECOMPUTE_BLOCK;
    tctx.policy.offload = true;
    tctx.host_arena = ctx->arena;
    check_trunk_step(ctx, s, &tctx, &base, grads, 0.0,
                     "a second CPU context, recompute block, checkpoints offloaded to the host");
    tctx.host_arena = NULL;
    tctx.policy = mf_policy_default();
    /* a trunk context without its gradients is refused */
    mf_train_step_options opt = mf_train_step_default_options();
    opt.trunk_ctx = &tctx;
    opt.trunk_model = &s->m;
    mf_train_step_result res;
    mf_status st = step(ctx, s, &opt, &res, NULL);
    MF_TEST_TRUE(st == MF_ERR_INVALID && strstr(mf_last_error(), "trunk gradients"),
                 "trunk context without gradients: %d %s", st, mf_last_error());
    free(grads);
    mf_test_ctx_free(&tctx, &tarena);
}

/* ---- memory policies ---------------------------------------------------------------------------
 */

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y ? 1 : 0;
}

/* Per gradient array: max|a - b| / max|b| <= tol (absolute against the largest gradient of all
 * arrays where an array is zero in exact arithmetic). Returns the worst ratio. */
static double compare_arrays(const char *what, const setup *s, const float *ref, double tol)
{
    const mf_param_layout *l = &s->gb.layout;
    double scale = 0, worst = 0;
    int worst_i = 0;
    double *rels = calloc((size_t)l->count, sizeof *rels);
    for (int64_t i = 0; i < l->total; i++) scale = fmax(scale, fabs((double)ref[i]));
    int bad = 0;
    for (int i = 0; i < l->count; i++) {
        const float *a = s->gb.data + l->offset[i], *b = ref + l->offset[i];
        double err = 0, mx = 0;
        bool nan = false;
        for (int64_t k = 0; k < l->numel[i]; k++) {
            if (!isfinite(a[k])) nan = true;
            err = fmax(err, fabs((double)a[k] - (double)b[k]));
            mx = fmax(mx, fabs((double)b[k]));
        }
        if (mf_train_grad_is_exactly_zero(s->gb.views.entries[i].name)) mx = scale;
        const double rel = mx > 0 ? err / mx : err;
        if (rel > worst) worst = rel, worst_i = i;
        rels[i] = rel;
        if (nan || !(rel <= tol)) {
            if (bad++ < 5)
                printf("    %s: %s %.3e\n", what, s->gb.views.entries[i].name, nan ? NAN : rel);
        }
    }
    qsort(rels, (size_t)l->count, sizeof *rels, cmp_double);
    const double median = rels[l->count / 2];
    free(rels);
    const char *wn = s->gb.views.entries[worst_i].name;
    printf("  %-20s gradient arrays: median %.1e, worst %.3e (tol %.0e) %s (%s)\n", what, median,
           worst, tol, bad ? "FAIL" : "ok",
           wn + (strncmp(wn, MF_AF2_ROOT, strlen(MF_AF2_ROOT)) ? 0 : strlen(MF_AF2_ROOT)));
    MF_TEST_TRUE(bad == 0, "%s: %d gradient arrays beyond %.0e", what, bad, tol);
    return worst;
}

static void test_policies(mf_ctx *ctx, setup *s)
{
    printf("memory policies on the reference step\n");
    const mf_policy saved_policy = ctx->policy;
    const int64_t total = s->gb.layout.total;
    float *base = malloc(sizeof(float) * (size_t)total);
    mf_train_step_result r0, r;
    ctx->policy = mf_policy_default();
    MF_TEST_OK(step(ctx, s, NULL, &r0, NULL));
    memcpy(base, s->gb.data, sizeof(float) * (size_t)total);
    const struct {
        const char *name, *key, *value;
        bool bitwise;
        double tol;
    } variants[] = {
        {"recompute=block", "recompute", "block", true, 0},
        {"recompute=every:2", "recompute", "every:2", true, 0},
        {"inplace=on", "inplace", "on", true, 0},
        {"chunk=5", "chunk", "5", false, TOL_CHUNK},
        {"storage=bf16", "storage", "bf16", false, TOL_BF16_GRAD},
    };
    for (size_t k = 0; k < sizeof variants / sizeof variants[0]; k++) {
        ctx->policy = mf_policy_default();
        MF_TEST_OK(mf_policy_set(&ctx->policy, variants[k].key, variants[k].value));
        const size_t before = mf_arena_used(ctx->arena);
        MF_TEST_OK(step(ctx, s, NULL, &r, NULL));
        MF_TEST_TRUE(mf_arena_used(ctx->arena) == before, "%s left arena allocations",
                     variants[k].name);
        printf("  %-20s loss/total %.9g (baseline %.9g), arena peak %.2f MiB (baseline %.2f)\n",
               variants[k].name, r.loss.total, r0.loss.total, (double)r.arena_peak / (1 << 20),
               (double)r0.arena_peak / (1 << 20));
        if (variants[k].bitwise) {
            MF_TEST_TRUE(r.loss.total == r0.loss.total, "%s: loss %.9g vs %.9g", variants[k].name,
                         r.loss.total, r0.loss.total);
            char what[96];
            snprintf(what, sizeof what, "%s gradients", variants[k].name);
            mf_check_bitwise_f32(what, s->gb.data, base, total);
        } else {
            const bool storage = !strcmp(variants[k].key, "storage");
            const double rel = fabs(r.loss.total - r0.loss.total) / fabs(r0.loss.total);
            printf("  %-20s loss/total relative difference %.3e (%s)\n", variants[k].name, rel,
                   storage ? "bitwise: the forward is f32" : "tol 1e-4");
            MF_TEST_TRUE(storage ? rel == 0.0 : rel <= variants[k].tol, "%s: loss differs by %.3e",
                         variants[k].name, rel);
            compare_arrays(variants[k].name, s, base, variants[k].tol);
        }
    }
    /* recompute on top of chunking: the same arithmetic as chunking alone */
    ctx->policy = mf_policy_default();
    ctx->policy.chunk_size = 5;
    MF_TEST_OK(step(ctx, s, NULL, &r0, NULL));
    memcpy(base, s->gb.data, sizeof(float) * (size_t)total);
    ctx->policy.recompute = MF_RECOMPUTE_BLOCK;
    MF_TEST_OK(step(ctx, s, NULL, &r, NULL));
    MF_TEST_TRUE(r.loss.total == r0.loss.total, "chunk=5 recompute=block: loss differs");
    mf_check_bitwise_f32("chunk=5 recompute=block vs chunk=5 gradients", s->gb.data, base, total);
    ctx->policy = saved_policy;
    free(base);
}

/* ---- accumulation and dropout ------------------------------------------------------------------
 */

static void test_accumulate_and_dropout(mf_ctx *ctx, setup *s)
{
    printf("accumulation and dropout\n");
    const int64_t total = s->gb.layout.total;
    float *a = malloc(sizeof(float) * (size_t)total), *b = malloc(sizeof(float) * (size_t)total);
    mf_train_step_result r0, r1, r2;
    MF_TEST_OK(step(ctx, s, NULL, &r0, NULL));
    for (int64_t i = 0; i < total; i++) a[i] = 2.0f * s->gb.data[i];
    MF_TEST_OK(mf_train_step(ctx, &s->m, &s->g, &s->f, NULL, &r1, NULL));
    compare_arrays("2 steps accumulated", s, a, TOL_ACCUMULATE);

    mf_train_step_options opt = mf_train_step_default_options();
    opt.dropout = true;
    opt.dropout_seed = 7;
    MF_TEST_OK(step(ctx, s, &opt, &r1, NULL));
    memcpy(a, s->gb.data, sizeof(float) * (size_t)total);
    printf("  dropout seed 7: loss/total %.6f (no dropout %.6f)\n", r1.loss.total, r0.loss.total);
    MF_TEST_TRUE(isfinite(r1.loss.total) && r1.loss.total != r0.loss.total,
                 "dropout did not change the loss");
    MF_TEST_OK(step(ctx, s, &opt, &r2, NULL));
    MF_TEST_TRUE(r2.loss.total == r1.loss.total, "dropout: the same seed gave another loss");
    mf_check_bitwise_f32("dropout: the same seed, gradients", s->gb.data, a, total);
    const mf_policy saved_policy = ctx->policy;
    ctx->policy.recompute = MF_RECOMPUTE_BLOCK;
    MF_TEST_OK(step(ctx, s, &opt, &r2, NULL));
    MF_TEST_TRUE(r2.loss.total == r1.loss.total, "dropout: recompute changed the loss");
    mf_check_bitwise_f32("dropout: recompute=block vs off, gradients", s->gb.data, a, total);
    ctx->policy = saved_policy;
    opt.dropout_seed = 8;
    MF_TEST_OK(step(ctx, s, &opt, &r2, NULL));
    memcpy(b, s->gb.data, sizeof(float) * (size_t)total);
    MF_TEST_TRUE(r2.loss.total != r1.loss.total, "dropout: seeds 7 and 8 gave the same loss");
    free(a);
    free(b);
}

/* ---- dump, check, errors ------------------------------------------------------------------------
 */

static void test_dump_and_errors(mf_ctx *ctx, setup *s)
{
    printf("dump, check, errors\n");
    mf_train_step_result res;
    MF_TEST_OK(step(ctx, s, NULL, &res, NULL));
    char path[] = "/tmp/memfold-test-train-step-XXXXXX";
    int fd = mkstemp(path);
    MF_TEST_TRUE(fd >= 0, "mkstemp");
    if (fd < 0) return;
    close(fd);
    MF_TEST_OK(mf_train_step_dump_write(path, &res, &s->gb.views, NULL));
    mf_train_check_report rep;
    MF_TEST_OK(mf_train_step_check(path, &res, &s->gb.views, NULL, &rep));
    double worst = 0;
    for (int i = 0; i < rep.count; i++) worst = fmax(worst, rep.items[i].result.rel);
    printf("  the dump against this run: %d datasets, %d failed, worst %.3e (exact)\n", rep.count,
           rep.failed, worst);
    MF_TEST_TRUE(rep.failed == 0 && worst == 0.0 && rep.count == 336 + 18,
                 "dump round trip: %d failed, worst %.3e, %d datasets", rep.failed, worst,
                 rep.count);
    mf_train_check_report_free(&rep);

    mf_train_step_result bad = res;
    bad.loss.total *= 1.001;
    MF_TEST_OK(mf_train_step_check(path, &bad, &s->gb.views, NULL, &rep));
    printf("  loss/total x 1.001: %d failed\n", rep.failed);
    MF_TEST_TRUE(rep.failed == 1, "a 1e-3 loss change must fail exactly loss/total (%d failed)",
                 rep.failed);
    mf_train_check_report_free(&rep);

    const float keep = s->gb.data[1000];
    s->gb.data[1000] = NAN;
    MF_TEST_OK(mf_train_step_check(path, &res, &s->gb.views, NULL, &rep));
    printf("  one NaN gradient element: %d failed\n", rep.failed);
    MF_TEST_TRUE(rep.failed == 1, "a NaN gradient must fail its array (%d failed)", rep.failed);
    mf_train_check_report_free(&rep);
    s->gb.data[1000] = keep;
    unlink(path);

    /* a missing label is named */
    mf_processed_features f2;
    mf_processed_init(&f2);
    f2.num_iterations = s->f.num_iterations;
    f2.num_res = s->f.num_res;
    for (int i = 0; i < s->f.num_features; i++) {
        const mf_feature *x = &s->f.features[i];
        if (!strcmp(x->name, "bert_mask")) continue;
        void *data;
        const int skip = x->per_iteration ? 1 : 0;
        MF_TEST_OK(mf_processed_add(&f2, x->name, x->array.dtype, x->per_iteration,
                                    x->array.ndim - skip, x->array.shape + skip, &data));
        memcpy(data, x->array.data,
               (size_t)mf_h5_array_numel(&x->array) * mf_dtype_size(x->array.dtype));
    }
    mf_status st = mf_train_step(ctx, &s->m, &s->g, &f2, NULL, &res, NULL);
    printf("  without bert_mask: %s\n", st == MF_OK ? "accepted" : mf_last_error());
    MF_TEST_TRUE(st == MF_ERR_FORMAT && strstr(mf_last_error(), "bert_mask"),
                 "a missing bert_mask must be MF_ERR_FORMAT naming it");
    mf_clear_error();
    mf_processed_free(&f2);
}

/* ---- the tiny random model in f64 ------------------------------------------------------------ */

/* A crop of the reference features: residues [r0, r0 + n), MSA rows [0, S), extra rows
 * [e0, e0 + E); every per-residue axis (size 24) cropped. */
static mf_status crop_features(const mf_processed_features *in, mf_processed_features *out,
                               int64_t r0, int64_t n, int64_t S, int64_t e0, int64_t E)
{
    static const char *const msa_rows[] = {"msa_feat", "msa_mask", "true_msa", "bert_mask",
                                           "msa_row_mask"};
    static const char *const extra_rows[] = {"extra_msa", "extra_msa_mask", "extra_has_deletion",
                                             "extra_deletion_value", "extra_msa_row_mask"};
    mf_processed_init(out);
    out->num_iterations = in->num_iterations;
    out->num_res = n;
    for (int i = 0; i < in->num_features; i++) {
        const mf_feature *x = &in->features[i];
        const int skip = x->per_iteration ? 1 : 0, nd = x->array.ndim - skip;
        int64_t start[MF_H5_MAX_DIMS] = {0}, count[MF_H5_MAX_DIMS];
        for (int k = 0; k < nd; k++) {
            count[k] = x->array.shape[k + skip];
            if (count[k] == in->num_res) start[k] = r0, count[k] = n;
        }
        for (size_t k = 0; k < 5; k++) {
            if (!strcmp(x->name, msa_rows[k])) start[0] = 0, count[0] = S;
            if (!strcmp(x->name, extra_rows[k])) start[0] = e0, count[0] = E;
        }
        void *data;
        MF_TRY(mf_processed_add(out, x->name, x->array.dtype, x->per_iteration, nd, count, &data));
        const size_t es = mf_dtype_size(x->array.dtype);
        /* copy element by element through the multi-index (the arrays are small) */
        int64_t total_out = 1, in_strides[MF_H5_MAX_DIMS], rin = 1;
        for (int k = 0; k < nd; k++) total_out *= count[k];
        for (int k = nd - 1; k >= 0; k--) in_strides[k] = rin, rin *= x->array.shape[k + skip];
        const int64_t R = skip ? x->array.shape[0] : 1;
        for (int64_t r = 0; r < R; r++)
            for (int64_t o = 0; o < total_out; o++) {
                int64_t rem = o, off = r * rin;
                for (int k = nd - 1; k >= 0; k--) {
                    off += (start[k] + rem % count[k]) * in_strides[k];
                    rem /= count[k];
                }
                memcpy((char *)data + (size_t)(r * total_out + o) * es,
                       (const char *)x->array.data + (size_t)off * es, es);
            }
    }
    return MF_OK;
}

static mf_status tiny_config(mf_config *c)
{
    MF_TRY(mf_config_preset("tiny", c));
    c->channels = (mf_channels_config){.c_m = 6, .c_z = 5, .c_t = 3, .c_e = 4, .c_s = 7};
    mf_evoformer_stack_config e = {
        .num_blocks = 1,
        .msa_row_attention = {2, 3, 0.15},
        .msa_column_attention = {2, 3, 0.0},
        .msa_transition_factor = 2,
        .outer_product_mean_c_hidden = 3,
        .triangle_multiplication_c_hidden = 4,
        .triangle_multiplication_dropout_rate = 0.25,
        .triangle_attention = {2, 3, 0.25},
        .pair_transition_factor = 2,
    };
    c->evoformer = e;
    c->extra_msa_stack = e;
    mf_template_config *t = &c->template_embedding;
    t->pair_stack.num_blocks = 1;
    t->pair_stack.triangle_attention = (mf_attention_config){2, 3, 0.25};
    t->pair_stack.triangle_multiplication_c_hidden = 4;
    t->pair_stack.pair_transition_factor = 2;
    t->pointwise_attention = (mf_template_pointwise_config){2, 3, false};
    c->structure_module.num_layers = 2;
    c->structure_module.ipa = (mf_ipa_config){2, 3, 2, 3};
    c->structure_module.angle_resnet_c_hidden = 5;
    c->structure_module.angle_resnet_num_blocks = 2;
    c->heads.predicted_lddt_c_hidden = 5;
    /* a pTM model: the aligned-error head and its loss (AF2 fine-tuning weight 0.1) */
    c->heads.predicted_aligned_error_enabled = true;
    c->loss.weights.predicted_aligned_error = 0.1;
    return mf_config_validate(c, "tiny test configuration");
}

typedef struct {
    mf_config cfg;
    mf_param_store s32, s64, g64;
    double *p64, *d64;
    mf_alphafold_model m32, m64, gm64;
    mf_processed_features f;
} tiny;

/* A store of f64 tensors with src's names and shapes over buf (values from src, or zeros). */
static mf_status mirror_f64(const mf_param_store *src, mf_param_store *dst, double **buf,
                            bool values)
{
    mf_param_store_init(dst);
    const int64_t total = mf_param_store_numel(src);
    *buf = calloc((size_t)total, sizeof(double));
    MF_REQUIRE(*buf, "f64 parameters");
    int64_t off = 0;
    for (int i = 0; i < src->count; i++) {
        const mf_tensor *t = &src->entries[i].tensor;
        MF_TRY(mf_param_store_add(dst, src->entries[i].name, t, false));
        const int64_t n = mf_tensor_numel(t);
        if (values)
            for (int64_t k = 0; k < n; k++) (*buf)[off + k] = ((const float *)t->data)[k];
        /* the store only handles f32 itself; the bound model sees f64 tensors */
        dst->entries[i].tensor = mf_tensor_make(*buf + off, MF_F64, MF_DEV_CPU, t->ndim, t->shape);
        off += n;
    }
    return MF_OK;
}

static mf_status make_tiny(tiny *t, const setup *ref)
{
    memset(t, 0, sizeof *t);
    mf_param_store_init(&t->s32);
    MF_TRY(tiny_config(&t->cfg));
    MF_TRY(mf_alphafold_random_params(&t->cfg, 11, &t->s32));
    /* every parameter moved off AF2's initial values (zero 'final' layers would hide paths) */
    uint64_t idx = 0;
    for (int i = 0; i < t->s32.count; i++) {
        mf_tensor *x = &t->s32.entries[i].tensor;
        float *d = x->data;
        for (int64_t k = 0; k < mf_tensor_numel(x); k++) d[k] += 0.2f * mf_rng_normal(17, 3, idx++);
    }
    MF_TRY(mf_alphafold_bind(&t->m32, &t->cfg, &t->s32));
    MF_TRY(mirror_f64(&t->s32, &t->s64, &t->p64, true));
    MF_TRY(mirror_f64(&t->s32, &t->g64, &t->d64, false));
    MF_TRY(mf_alphafold_bind(&t->m64, &t->cfg, &t->s64));
    MF_TRY(mf_alphafold_bind(&t->gm64, &t->cfg, &t->g64));
    MF_TRY(crop_features(&ref->f, &t->f, 10, 9, 3, 10, 5));
    /* a masked template residue */
    const mf_feature *pm = mf_processed_find(&t->f, "template_pseudo_beta_mask");
    MF_REQUIRE(pm, "cropped features");
    ((float *)pm->array.data)[9 + 4] = 0.0f;
    return MF_OK;
}

static void free_tiny(tiny *t)
{
    mf_param_store_free(&t->s32);
    mf_param_store_free(&t->s64);
    mf_param_store_free(&t->g64);
    free(t->p64);
    free(t->d64);
    mf_processed_free(&t->f);
}

/* The recycled state of iteration 1 from the f32 model, in dtype dt (arena). */
static mf_status recycled(mf_ctx *ctx, tiny *t, mf_dtype dt, mf_recycled_state *out)
{
    mf_recycled_state p32;
    MF_TRY(mf_train_recycled_state(ctx, &t->m32, &t->f, 1, &p32));
    if (dt == MF_F32) return *out = p32, MF_OK;
    mf_tensor *src[3] = {&p32.m1_prev, &p32.z_prev, &p32.x_prev};
    mf_tensor *dst[3] = {&out->m1_prev, &out->z_prev, &out->x_prev};
    for (int k = 0; k < 3; k++) {
        MF_TRY(mf_arena_tensor(ctx->arena, dst[k], MF_F64, src[k]->ndim, src[k]->shape, "test"));
        MF_TRY(mf_convert(ctx, dst[k], src[k]));
    }
    return MF_OK;
}

/* loss/total of the trained iteration in f64 with the structure module's inter-layer rotations
 * frozen at the analytic run's (AF2's stop-gradient, explicit). */
static double loss64(mf_ctx *ctx, tiny *t, const mf_recycled_state *prev, const mf_tensor *quat)
{
    mf_train_step_result r;
    memset(&r, 0, sizeof r);
    mf_train_step_options opt = mf_train_step_default_options();
    opt.frozen_quat = quat;
    if (mf_train_iteration(ctx, &t->m64, NULL, &t->f, 1, 1, prev, &opt, &r, NULL) != MF_OK)
        return NAN;
    return r.loss.total;
}

/* The module a parameter belongs to, as a short key: the sub-module inside a stack or a structure
 * module fold iteration ("evoformer_iteration/outer_product_mean", "fold_iteration/transition_1"),
 * else the top-level module (input embedder, recycling embedder, ..., a head). */
static void module_key(const char *name, char *key, size_t cap)
{
    static const char *const stacks[] = {"/evoformer_iteration/", "/extra_msa_stack/",
                                         "/__layer_stack_no_state/", "/fold_iteration/"};
    for (size_t k = 0; k < sizeof stacks / sizeof stacks[0]; k++) {
        const char *p = strstr(name, stacks[k]);
        if (!p) continue;
        const char *q = p + strlen(stacks[k]), *r = strchr(q, '/');
        snprintf(key, cap, "%s%.*s", stacks[k] + 1, (int)(r ? r - q : (long)strlen(q)), q);
        return;
    }
    static const char *const groups[][2] = {
        {"/preprocess_1d", "input_embedder"},
        {"/preprocess_msa", "input_embedder"},
        {"/left_single", "input_embedder"},
        {"/right_single", "input_embedder"},
        {"/pair_activiations", "input_embedder"},
        {"/prev_", "recycling_embedder"},
        {"single_template_embedding/embedding2d", "template_pair_embedder"},
        {"single_template_embedding/output_layer_norm", "template_output_layer_norm"},
        {"template_embedding/attention", "template_pointwise_attention"},
        {"/template_single_embedding", "template_single_embedder"},
        {"/template_projection", "template_single_embedder"},
        {"/extra_msa_activations", "extra_msa_embedder"},
        {"/single_activations", "single_activations"},
        {"structure_module/", "structure_module"},
        {"distogram_head", "distogram_head"},
        {"masked_msa_head", "masked_msa_head"},
        {"predicted_lddt_head", "predicted_lddt_head"},
        {"experimentally_resolved_head", "experimentally_resolved_head"},
        {"predicted_aligned_error_head", "predicted_aligned_error_head"},
    };
    for (size_t k = 0; k < sizeof groups / sizeof groups[0]; k++)
        if (strstr(name, groups[k][0])) {
            snprintf(key, cap, "%s", groups[k][1]);
            return;
        }
    snprintf(key, cap, "%s", name);
}

/* Rank of array i among the arrays of its group in a random order. */
static int random_rank(const int *group, int n, int i)
{
    const uint32_t k = mf_rng_u32(5, (uint64_t)group[i], (uint64_t)i);
    int rank = 0;
    for (int j = 0; j < n; j++)
        if (group[j] == group[i] && mf_rng_u32(5, (uint64_t)group[j], (uint64_t)j) < k) rank++;
    return rank;
}

static void test_whole_model_fd(mf_ctx *ctx, const setup *ref)
{
    printf("whole-model gradient check: tiny random model, the trained iteration in f64 against "
           "central differences\n");
    tiny t;
    mf_status st = make_tiny(&t, ref);
    MF_TEST_OK(st);
    if (st != MF_OK) return;
    const mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    const mf_policy saved_policy = ctx->policy;
    ctx->policy = mf_policy_default();
    mf_recycled_state prev;
    MF_TEST_OK(recycled(ctx, &t, MF_F64, &prev));
    mf_train_step_result r;
    memset(&r, 0, sizeof r);
    const int64_t L = t.cfg.structure_module.num_layers, N = 9;
    double *qbuf = calloc((size_t)((L + 1) * N * 4), sizeof(double));
    mf_train_step_outputs outs = {
        .quat = mf_tensor_make(qbuf, MF_F64, MF_DEV_CPU, 3, (const int64_t[]){L + 1, N, 4})};
    MF_TEST_OK(mf_train_iteration(ctx, &t.m64, &t.gm64, &t.f, 1, 1, &prev, NULL, &r, &outs));
    const double L0 = r.loss.total;
    const double Lf = loss64(ctx, &t, &prev, &outs.quat);
    printf("  the frozen forward at the point: loss/total %.17g vs %.17g\n", Lf, L0);
    MF_TEST_TRUE(Lf == L0, "the frozen forward must reproduce the loss bitwise");
    printf("  N 9, loss/total %.6f:", L0);
    for (int k = 0; k < MF_LOSS_NUM_TERMS; k++)
        if (r.loss.present[k]) printf(" %s %.4f", mf_loss_term_name(k), r.loss.term[k]);
    printf("\n");
    bool active = isfinite(L0);
    for (int k = 0; k < MF_LOSS_NUM_TERMS; k++)
        active = active && r.loss.present[k] && r.loss.term[k] > 0 && r.loss.weight[k] > 0;
    MF_TEST_TRUE(active, "tiny model: every term (PAE included) should be active");

    /* Per module, ELEMS elements from different arrays (in a random order), each a random element
     * with |g| >= 0.1 of its array's largest (an all-zero array: element 0). Central differences
     * with h = MF_TOL_FD_STEP = 1e-6: truncation h^2 |f'''| / 6, where |f'''| reaches ~1e5 for
     * parameters that shift a whole representation (the template pair embedding's bias; measured
     * by differences over h = 1e-8 .. 1e-3), i.e. ~2e-8; rounding ~1e-16 |L| / h ~ 5e-9 with
     * |L| ~ 50. So h and 2h agree to ~1e-7 relative on a smooth function, and a disagreement
     * beyond 1e-6 means a kink (ReLU, FAPE clamp, a discrete choice) within 2h of the point: that
     * element is replaced. Tolerance |fd - g| <= 1e-8 (1 + |L|) + 1e-6 |g| (measured worst
     * |fd - g| 6e-8). */
    enum { ELEMS = 2, MAX_GROUPS = 64 };
    char keys[MAX_GROUPS][96];
    int n_groups = 0, checked = 0, kinks = 0, failed = 0, evaluations = 0, covered = 0;
    const int n_arrays = t.s64.count;
    int *group = calloc((size_t)n_arrays, sizeof *group);
    for (int i = 0; i < n_arrays; i++) {
        char key[96];
        module_key(t.s64.entries[i].name, key, sizeof key);
        int gk = 0;
        while (gk < n_groups && strcmp(keys[gk], key)) gk++;
        if (gk == n_groups && n_groups < MAX_GROUPS)
            snprintf(keys[n_groups++], sizeof keys[0], "%s", key);
        group[i] = gk;
    }
    const double h = MF_TOL_FD_STEP, t0 = (double)clock() / CLOCKS_PER_SEC;
    for (int gk = 0; gk < n_groups; gk++) {
        int done = 0;
        for (int pass = 0; pass < n_arrays && done < ELEMS; pass++) {
            int a = -1;
            for (int i = 0; i < n_arrays && a < 0; i++)
                if (group[i] == gk && random_rank(group, n_arrays, i) == pass) a = i;
            if (a < 0) break;
            const char *name = t.s64.entries[a].name;
            double *p = t.s64.entries[a].tensor.data;
            const double *g = t.g64.entries[a].tensor.data;
            const int64_t n = mf_tensor_numel(&t.s64.entries[a].tensor);
            double gmax = 0;
            for (int64_t k = 0; k < n; k++) gmax = fmax(gmax, fabs(g[k]));
            for (int attempt = 0; attempt < 2; attempt++) {
                int64_t e = 0;
                for (int tries = 0; tries < 64; tries++) {
                    const int64_t k =
                        (int64_t)(mf_rng_u32(6, (uint64_t)a, (uint64_t)(64 * attempt + tries)) %
                                  (uint64_t)n);
                    if (fabs(g[k]) >= 0.1 * gmax) {
                        e = k;
                        break;
                    }
                }
                const double x0 = p[e];
                double fd[2];
                for (int sgn = 0; sgn < 2; sgn++) {
                    const double hh = h * (sgn + 1);
                    p[e] = x0 + hh;
                    const double lp = loss64(ctx, &t, &prev, &outs.quat);
                    p[e] = x0 - hh;
                    const double lm = loss64(ctx, &t, &prev, &outs.quat);
                    p[e] = x0;
                    fd[sgn] = (lp - lm) / (2 * hh);
                    evaluations += 2;
                }
                if (!(fabs(fd[0] - fd[1]) <= 1e-6 * (1.0 + fabs(fd[0])))) {
                    kinks++;
                    printf("    kink near %s[%lld]: fd(h) %.9g fd(2h) %.9g (replaced)\n", name,
                           (long long)e, fd[0], fd[1]);
                    continue;
                }
                const double err = fabs(fd[0] - g[e]);
                const double tol = 1e-8 * (1.0 + fabs(L0)) + 1e-6 * fabs(g[e]);
                const bool ok = err <= tol;
                failed += !ok;
                checked++;
                done++;
                const char *leaf = strrchr(name, '/');
                printf("    %-48s %-22s [%4lld] analytic %+.9e fd %+.9e |diff| %.1e %s\n", keys[gk],
                       leaf ? leaf + 1 : name, (long long)e, g[e], fd[0], err, ok ? "ok" : "FAIL");
                MF_TEST_TRUE(ok, "FD %s[%lld]: analytic %.9e vs %.9e", name, (long long)e, g[e],
                             fd[0]);
                break;
            }
        }
        covered += done > 0;
        if (done == 0) printf("    %s: no element away from a kink\n", keys[gk]);
    }
    printf("  %d elements in %d modules (%d covered), %d failed, %d replaced near a kink; %d loss "
           "evaluations, %.1f s CPU; tolerance |fd - g| <= 1e-8 (1 + |L|) + 1e-6 |g|\n",
           checked, n_groups, covered, failed, kinks, evaluations,
           (double)clock() / CLOCKS_PER_SEC - t0);
    MF_TEST_TRUE(covered == n_groups && n_groups >= 40, "%d of %d modules covered", covered,
                 n_groups);
    MF_TEST_TRUE(kinks <= checked / 4, "%d kinks among %d elements", kinks, checked);
    free(group);

    /* f32 against f64 (same parameters, the same recycled state rounded to f32) */
    {
        mf_grad_buffer gb32;
        mf_alphafold_model *g32 = malloc(sizeof *g32);
        MF_TEST_OK(mf_grad_buffer_init(&gb32, &t.s32, NULL));
        MF_TEST_OK(mf_alphafold_bind(g32, &t.cfg, &gb32.views));
        mf_recycled_state p32;
        MF_TEST_OK(recycled(ctx, &t, MF_F32, &p32));
        mf_train_step_result r32;
        memset(&r32, 0, sizeof r32);
        MF_TEST_OK(mf_train_iteration(ctx, &t.m32, g32, &t.f, 1, 1, &p32, NULL, &r32, NULL));
        const double lrel = fabs(r32.loss.total - L0) / fabs(L0);
        double wr = 0;
        int bad = 0;
        for (int i = 0; i < t.g64.count; i++) {
            const double *d = t.g64.entries[i].tensor.data;
            const float *f = gb32.views.entries[i].tensor.data;
            double err = 0, mx = 0;
            for (int64_t k = 0; k < mf_tensor_numel(&gb32.views.entries[i].tensor); k++) {
                err = fmax(err, fabs((double)f[k] - d[k]));
                mx = fmax(mx, fabs(d[k]));
            }
            const double rel = mx > 0 ? err / mx : err;
            if (!(rel <= TOL_F32_F64) && !mf_train_grad_is_exactly_zero(t.g64.entries[i].name))
                bad++;
            if (!mf_train_grad_is_exactly_zero(t.g64.entries[i].name)) wr = fmax(wr, rel);
        }
        printf("  f32 vs f64: loss/total %.3e relative, worst gradient array %.3e (tol %.0e)\n",
               lrel, wr, TOL_F32_F64);
        MF_TEST_TRUE(lrel <= 1e-5 && bad == 0, "f32 vs f64: loss %.3e, %d arrays beyond %.0e", lrel,
                     bad, TOL_F32_F64);
        mf_grad_buffer_free(&gb32);
        free(g32);
    }
    ctx->policy = saved_policy;
    mf_arena_release(ctx->arena, mark);
    free(qbuf);
    free_tiny(&t);
}

int main(void)
{
    snprintf(g_dir, sizeof g_dir, "%s/testvectors", mf_test_shared_dir());
    mf_arena arena;
    mf_ctx ctx;
    if (mf_test_ctx_cpu(&ctx, &arena, (size_t)2 << 30) != MF_OK) {
        printf("context: %s\n", mf_last_error());
        return 1;
    }
    setup *s = calloc(1, sizeof *s);
    mf_status st = load_train_reference(s);
    MF_TEST_OK(st);
    if (st == MF_OK) {
        test_reference(&ctx, s);
        test_trunk_cpu(&ctx, s);
        test_policies(&ctx, s);
        test_accumulate_and_dropout(&ctx, s);
        test_dump_and_errors(&ctx, s);
        test_whole_model_fd(&ctx, s);
    }
    free_setup(s);
    free(s);
    mf_test_ctx_free(&ctx, &arena);
    return mf_test_finish("test_train_step");
}
