/* The whole AlphaFold 2 inference (model/alphafold.h):
 *  1. shared/testvectors: every stack fed with the reference's recorded stage inputs, then the
 *     whole forward pass (2 recycling iterations) with every output and every intermediate
 *     stage of expected_outputs.h5 compared (max|c - r| / max|r| <= the dataset's rtol, 1e-4),
 *     through mf_verify_model;
 *  2. memory policies on the same inference: chunk sizes 1, 5 and 64 against unchunked
 *     (within 1e-5: the global column attention sums over sequence chunks; bitwise when the
 *     chunk splits nothing), in-place updates, a recording run bitwise equal to the plain
 *     one, bf16 compute (one iteration) within MODEL_BF16_RTOL, the arena back at its mark;
 *  3. recycling: one iteration reproduces the reference's iteration 0 and differs from the
 *     second; three iterations (more than the features' axis) reuse its slices;
 *  4. random AF2 initialisation of the tiny preset: the expected parameter list (= the 336
 *     arrays of params_af2.npz), a bound model, its all-zero 'final' layers giving identity
 *     frames and pLDDT 50;
 *  5. the dump file written and compared with expected_outputs.h5 (62 datasets); the comparison
 *     failing on a perturbed pLDDT, a NaN logit and a missing intermediate;
 *  6. errors: a missing feature named, missing/unexpected parameters listed, multimer refused. */
#include "model/alphafold.h"
#include "model/verify_model.h"
#include "eval/compare.h"
#include "protein/residue_constants.h"
#include "tests/support/mf_test.h"
#include "tests/model_harness.inc"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* bf16 matrix-product inputs through the whole network (extra-MSA and template stacks, 2
 * Evoformer blocks, 2 structure-module layers, random untrained weights): MF_TOL_BF16_RTOL bounds
 * one op, the network compounds it. Measured on the reference model (one iteration): positions
 * 1.6e-2, pLDDT 1.9e-3, pair 9e-3, atom-placing torsion angles 5.3e-2. */
#define MODEL_BF16_RTOL 1e-1

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
    /* 30 stage items + 14 outputs + 48 intermediates of expected_outputs.h5 */
    MF_TEST_TRUE(rep.count == 92, "expected 92 compared datasets, got %d", rep.count);
}

/* Zeroes, in both snapshots, the sm/angles that place no atom: omega and phi (their rigid groups
 * hold only hydrogens, absent from atom37) and the chi angles the residue does not have. The
 * angle resnet still predicts them, from unnormalised vectors that may be near zero (their
 * direction is then ill-conditioned: bf16 moved one omega by 0.3 here). */
static void mask_unused_torsions(const loaded *l, snapshot *a, snapshot *b, int k)
{
    mf_tensor aatype;
    if (mf_processed_tensor(&l->f, "aatype", 0, &aatype) != MF_OK) return;
    const int32_t *aa = aatype.data;
    const int64_t N = l->f.num_res, L = a->n[k] / (N * MF_NUM_TORSIONS * 2);
    for (int64_t x = 0; x < L; x++)
        for (int64_t i = 0; i < N; i++)
            for (int t = 0; t < MF_NUM_TORSIONS; t++) {
                const bool used = t == 2 || (t >= 3 && mf_chi_angles_mask[aa[i]][t - 3] != 0.0f);
                if (used) continue;
                for (int c = 0; c < 2; c++) {
                    const int64_t e = ((x * N + i) * MF_NUM_TORSIONS + t) * 2 + c;
                    a->data[k][e] = b->data[k][e] = 0.0f;
                }
            }
}

static void test_policies(mf_ctx *ctx, const loaded *l)
{
    printf("memory policies and hooks on the whole inference (2 iterations)\n");
    const mf_policy saved_policy = ctx->policy;
    mf_alphafold_options opt = {.all_heads = true};
    snapshot base;
    ctx->policy = mf_policy_default();
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    if (!run(ctx, l, &opt, &base, "baseline")) return;
    MF_TEST_TRUE(mf_arena_used(ctx->arena) == mark.offset, "inference left arena allocations");

    /* a recording hook changes nothing the fused path computes */
    {
        mf_alphafold_recorder rec;
        mf_alphafold_recorder_init(&rec, l->f.num_iterations, 2);
        mf_alphafold_options o2 = opt;
        o2.hook = mf_alphafold_recorder_hook;
        o2.hook_data = &rec;
        snapshot s;
        if (run(ctx, l, &o2, &s, "hooked")) {
            for (int k = 0; k < NOUT; k++) {
                char nm[96];
                snprintf(nm, sizeof nm, "hook on vs off: %s", s.name[k]);
                mf_check_bitwise_f32(nm, s.data[k], base.data[k], base.n[k]);
            }
            snap_free(&s);
        }
        MF_TEST_TRUE(rec.count == 48, "recorder holds %d arrays, expected 48", rec.count);
        mf_alphafold_recorder_free(&rec);
    }
    /* chunked: the modules process row slices with the same arithmetic per row, except the
     * extra-MSA stack's global column attention (Alg. 19), whose masked mean sums over sequence
     * chunks (f32 rounding, carried through the network: MF_TOL_VEC_MODULE); a chunk of at
     * least N rows (64) splits nothing and must be bitwise */
    const int64_t chunks[] = {1, 5, 64};
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        ctx->policy = mf_policy_default();
        ctx->policy.chunk_size = chunks[c];
        snapshot s;
        if (!run(ctx, l, &opt, &s, "chunked")) continue;
        for (int k = 0; k < NOUT; k++) {
            char nm[96];
            snprintf(nm, sizeof nm, "chunk %lld vs off: %s", (long long)chunks[c], s.name[k]);
            if (chunks[c] >= l->f.num_res)
                mf_check_bitwise_f32(nm, s.data[k], base.data[k], base.n[k]);
            else
                mf_check_maxrel_f32(nm, s.data[k], base.data[k], base.n[k], MF_TOL_VEC_MODULE);
        }
        snap_free(&s);
    }
    /* in place: the modules accumulate into the stream themselves (f32 rounding only, amplified
     * in the torsion angles to ~1e-5: the reference-vector bar MF_TOL_VEC_MODEL) */
    {
        ctx->policy = mf_policy_default();
        ctx->policy.inplace = true;
        ctx->policy.chunk_size = 7;
        snapshot s;
        if (run(ctx, l, &opt, &s, "in place")) {
            for (int k = 0; k < NOUT; k++) {
                char nm[96];
                snprintf(nm, sizeof nm, "inplace+chunk 7 vs baseline: %s", s.name[k]);
                mf_check_maxrel_f32(nm, s.data[k], base.data[k], base.n[k], MF_TOL_VEC_MODEL);
            }
            snap_free(&s);
        }
    }
    /* bf16 matrix-product inputs, f32 accumulation; one iteration, because the recycled
     * distogram is discrete (bf16 moves positions by ~0.1 A, enough to change a recycling bin
     * and with it the whole second iteration) */
    {
        ctx->policy = mf_policy_default();
        mf_alphafold_options o1 = opt;
        o1.num_iterations = 1;
        snapshot b1, s;
        if (run(ctx, l, &o1, &b1, "f32, 1 iteration")) {
            ctx->policy.compute = MF_BF16;
            if (run(ctx, l, &o1, &s, "bf16 compute")) {
                for (int k = 0; k < NOUT; k++) {
                    char nm[96];
                    snprintf(nm, sizeof nm, "bf16 compute vs f32 (1 iteration): %s%s", s.name[k],
                             strcmp(s.name[k], "sm/angles") ? "" : " (atom-placing)");
                    if (!strcmp(s.name[k], "sm/angles")) mask_unused_torsions(l, &s, &b1, k);
                    mf_check_maxrel_f32(nm, s.data[k], b1.data[k], b1.n[k], MODEL_BF16_RTOL);
                }
                snap_free(&s);
            }
            snap_free(&b1);
        }
    }
    snap_free(&base);
    ctx->policy = saved_policy;
}

/* The trunk on a second CPU context: the transfers and the split arenas, bitwise. */
static void test_trunk_cpu(mf_ctx *ctx, const loaded *l)
{
    mf_ctx tctx;
    mf_arena tarena;
    MF_TEST_OK(mf_test_ctx_cpu(&tctx, &tarena, (size_t)256 << 20));
    mf_alphafold_options opt = {.all_heads = true};
    snapshot base;
    if (run(ctx, l, &opt, &base, "single context")) {
        check_trunk_context(ctx, l, &tctx, &base, 0.0, "a second CPU context");
        snap_free(&base);
    }
    /* a trunk context without its model is refused */
    mf_alphafold_outputs out;
    opt.trunk_ctx = &tctx;
    mf_status st = mf_alphafold_inference(ctx, &l->m, &l->f, &opt, &out);
    MF_TEST_TRUE(st == MF_ERR_INVALID && strstr(mf_last_error(), "trunk model"),
                 "trunk context without a model: %d %s", st, mf_last_error());
    mf_test_ctx_free(&tctx, &tarena);
}

/* The dump file round trip, and the comparison failing on a perturbed value, a NaN and a
 * missing intermediate. */
static void test_dump_and_checker(mf_ctx *ctx, const loaded *l)
{
    printf("dump file against expected_outputs.h5; the checker fails on a wrong value, NaN, "
           "missing data\n");
    char ref[1200], dump[256];
    snprintf(ref, sizeof ref, "%s/expected_outputs.h5", g_dir);
    snprintf(dump, sizeof dump, "%s/memfold-test-model-%d.h5", P_tmpdir, (int)getpid());
    mf_alphafold_recorder rec;
    mf_alphafold_recorder_init(&rec, l->f.num_iterations, 2);
    mf_alphafold_options opt = {
        .all_heads = true, .hook = mf_alphafold_recorder_hook, .hook_data = &rec};
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_alphafold_outputs out;
    MF_TEST_OK(mf_alphafold_inference(ctx, &l->m, &l->f, &opt, &out));
    static mf_verify_report rep;
    if (out.plddt.data) {
        MF_TEST_OK(mf_alphafold_dump_write(dump, &out, &rec));
        rep.count = 0;
        MF_TEST_OK(mf_verify_dump_file(dump, ref, &rep));
        int failed = 0;
        double worst = 0;
        for (int i = 0; i < rep.count; i++) {
            failed += !rep.items[i].result.pass;
            worst = fmax(worst, rep.items[i].result.rel);
        }
        MF_TEST_TRUE(rep.count == 62 && failed == 0, "dump: %d datasets, %d failed", rep.count,
                     failed);
        printf("  dump %s: %d datasets compared, %d failed, worst %.3e (tol 1e-4)\n", dump,
               rep.count, failed, worst);
        remove(dump);
        /* a perturbed pLDDT, a NaN in the distogram and a dropped intermediate must fail */
        float *pl = out.plddt.data, *dg = out.distogram_logits.data;
        pl[3] += 0.1f;
        dg[100] = NAN;
        rec.records[rec.count - 1].name[0] = 'X';
        rep.count = 0;
        MF_TEST_OK(mf_verify_model_outputs(ref, &out, &rec, &rep));
        int seen = 0;
        for (int i = 0; i < rep.count; i++) {
            const mf_verify_item *it = &rep.items[i];
            if (!strcmp(it->name, "plddt") || !strcmp(it->name, "distogram_logits") ||
                !strncmp(it->name, "intermediates/", 14)) {
                if (!it->result.pass) seen++;
            } else {
                MF_TEST_TRUE(it->result.pass, "%s failed unperturbed", it->name);
            }
        }
        MF_TEST_TRUE(seen == 3,
                     "perturbed pLDDT, NaN distogram, missing intermediate: %d of 3 "
                     "comparisons failed",
                     seen);
        printf("  perturbed pLDDT (+0.1), NaN distogram logit, missing intermediate: %d of 3 "
               "caught %s\n",
               seen, seen == 3 ? "ok" : "FAIL");
    }
    mf_arena_release(ctx->arena, mark);
    mf_alphafold_recorder_free(&rec);
}

/* One iteration gives the reference's iteration-0 structure; three reuse slice 0 in the third. */
static void test_recycling(mf_ctx *ctx, const loaded *l)
{
    printf("recycling: 1 iteration against the reference's iteration 0, 3 iterations\n");
    char path[1200];
    snprintf(path, sizeof path, "%s/expected_outputs.h5", g_dir);
    hid_t h;
    if (mf_h5_open_read(path, &h) != MF_OK) {
        mf_test_fail("%s", mf_last_error());
        return;
    }
    mf_h5_array frames = {0}, single = {0};
    MF_TEST_OK(
        mf_h5_read_array(h, path, "intermediates/structure_module/out_frames", MF_F32, &frames));
    MF_TEST_OK(mf_h5_read_array(h, path, "intermediates/evoformer/out_s", MF_F32, &single));
    H5Fclose(h);
    mf_alphafold_options opt = {.num_iterations = 1};
    snapshot s1, s3;
    if (frames.data && single.data && run(ctx, l, &opt, &s1, "1 iteration")) {
        /* iteration 0 is the first slice of the recorded [R, ...] arrays */
        mf_check_maxrel_f32("1 iteration: sm/frames vs out_frames[0]", s1.data[9], frames.data,
                            s1.n[9], MF_TOL_VEC_MODEL);
        mf_check_maxrel_f32("1 iteration: single vs evoformer out_s[0]", s1.data[6], single.data,
                            s1.n[6], MF_TOL_VEC_MODEL);
        float *f1 = (float *)frames.data + s1.n[9];
        double diff = 0;
        for (int64_t i = 0; i < s1.n[9]; i++) diff = fmax(diff, fabs(s1.data[9][i] - f1[i]));
        MF_TEST_TRUE(diff > 1e-3,
                     "iteration 1 frames equal iteration 0's (recycling had no "
                     "effect): max diff %g",
                     diff);
        snap_free(&s1);
    }
    opt.num_iterations = 3;
    if (run(ctx, l, &opt, &s3, "3 iterations")) {
        bool finite = true;
        for (int k = 0; k < NOUT; k++)
            for (int64_t i = 0; i < s3.n[k]; i++) finite = finite && isfinite(s3.data[k][i]);
        MF_TEST_TRUE(finite, "3 iterations: non-finite output");
        printf("  3 iterations (features slice 0, 1, 0): finite outputs %s\n",
               finite ? "ok" : "FAIL");
        snap_free(&s3);
    }
    mf_h5_array_free(&frames);
    mf_h5_array_free(&single);
}

/* recycle_early_stop_tolerance: a huge tolerance stops after 2 iterations with the outputs of a
 * plain 2-iteration run (heads included); its delta equals the RMS change of the Calpha-Calpha
 * distances between the 1- and 2-iteration structures, recomputed here; a tiny tolerance and
 * the option off run every iteration. */
static double early_stop_run(mf_ctx *ctx, const loaded *l, double tol, int64_t iters, int64_t *ran,
                             snapshot *s)
{
    mf_alphafold_options opt = {.num_iterations = iters, .recycle_early_stop_tolerance = tol};
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_alphafold_outputs out;
    mf_status st = mf_alphafold_inference(ctx, &l->m, &l->f, &opt, &out);
    MF_TEST_TRUE(st == MF_OK, "early stop %g: %s", tol, mf_last_error());
    *ran = st == MF_OK ? out.num_iterations : -1;
    const double change = st == MF_OK ? out.recycle_change : -2;
    if (st == MF_OK && s) snap_take(s, &out);
    mf_arena_release(ctx->arena, mark);
    return change;
}

static void test_recycle_early_stop(mf_ctx *ctx, const loaded *l)
{
    printf("recycle early stop (RMS change of the Calpha distance matrix)\n");
    snapshot s1, s2, se;
    mf_alphafold_options o1 = {.num_iterations = 1}, o2 = {.num_iterations = 2};
    if (!run(ctx, l, &o1, &s1, "1 iteration")) return;
    if (!run(ctx, l, &o2, &s2, "2 iterations")) {
        snap_free(&s1);
        return;
    }
    int64_t ran = 0;
    const double delta = early_stop_run(ctx, l, 1e9, 4, &ran, &se);
    if (ran == 2) {
        bool same = true;
        for (int k = 0; k < NOUT; k++)
            same = same && se.n[k] == s2.n[k] &&
                   !memcmp(se.data[k], s2.data[k], sizeof(float) * (size_t)s2.n[k]);
        MF_TEST_TRUE(same, "early-stopped run differs from a plain 2-iteration run");
        printf("  tolerance 1e9, 4 iterations asked: %lld run, outputs == 2 iterations %s\n",
               (long long)ran, same ? "ok" : "FAIL");
        snap_free(&se);
    } else {
        MF_TEST_TRUE(false, "tolerance 1e9: %lld iterations run, expected 2", (long long)ran);
        if (ran > 0) snap_free(&se);
    }
    /* the criterion recomputed from the two runs' final positions (seq_mask is all ones here) */
    const float *a = s1.data[0], *b = s2.data[0];
    const int64_t N = s1.n[0] / (37 * 3);
    double sum = 0;
    for (int64_t i = 0; i < N; i++)
        for (int64_t j = 0; j < N; j++) {
            double da = 0, db = 0;
            for (int c = 0; c < 3; c++) {
                const double ea = (double)a[(i * 37 + 1) * 3 + c] - a[(j * 37 + 1) * 3 + c];
                const double eb = (double)b[(i * 37 + 1) * 3 + c] - b[(j * 37 + 1) * 3 + c];
                da += ea * ea;
                db += eb * eb;
            }
            sum += (sqrt(db) - sqrt(da)) * (sqrt(db) - sqrt(da));
        }
    const double expect = sqrt(sum / (double)(N * N));
    /* both sides are the same double arithmetic on the same f32 positions */
    MF_TEST_TRUE(isfinite(delta) && fabs(delta - expect) <= 1e-9 * fmax(1.0, expect),
                 "reported delta %.9g vs recomputed %.9g", delta, expect);
    printf("  delta after iteration 1: %.6f A, recomputed %.6f A (tol 1e-9 rel)\n", delta, expect);
    MF_TEST_TRUE(expect > 1e-6, "recycling did not move the structure: delta %g", expect);
    snap_free(&s1);
    snap_free(&s2);

    double d = early_stop_run(ctx, l, 1e-12, 3, &ran, NULL);
    MF_TEST_TRUE(ran == 3 && d > 1e-12, "tolerance 1e-12: %lld iterations, delta %g, expected 3",
                 (long long)ran, d);
    printf("  tolerance 1e-12, 3 iterations asked: %lld run (last delta %.6f A)\n", (long long)ran,
           d);
    d = early_stop_run(ctx, l, 0, 3, &ran, NULL);
    MF_TEST_TRUE(ran == 3 && d == -1, "off: %lld iterations, delta %g, expected 3 and -1",
                 (long long)ran, d);
    printf("  off, 3 iterations asked: %lld run\n", (long long)ran);
}

/* The tiny preset with AF2's initialisers: every expected parameter, a forward pass whose 'final'
 * zero layers leave identity frames and uniform pLDDT logits. */
static void test_random_init(mf_ctx *ctx, const loaded *ref)
{
    printf("random AF2 initialisation of the tiny preset\n");
    mf_config cfg;
    MF_TEST_OK(mf_config_preset("tiny", &cfg));
    mf_param_store s;
    mf_param_store_init(&s);
    MF_TEST_OK(mf_alphafold_random_params(&cfg, 11, &s));
    mf_param_expect_list ex;
    mf_param_expect_list_init(&ex);
    MF_TEST_OK(mf_alphafold_expected_params(&cfg, &ex));
    MF_TEST_TRUE(ex.count == s.count && s.count == ref->store.count,
                 "tiny: %d expected, %d drawn, %d in params_af2.npz", ex.count, s.count,
                 ref->store.count);
    MF_TEST_OK(mf_param_store_check(&s, &ex, NULL));
    MF_TEST_OK(mf_param_store_check(&ref->store, &ex, NULL));
    printf("  %d parameters expected = drawn = in params_af2.npz (%lld values)\n", ex.count,
           (long long)mf_param_store_numel(&s));
    mf_param_expect_list_free(&ex);
    mf_alphafold_model *m = malloc(sizeof *m);
    MF_TEST_OK(mf_alphafold_bind(m, &cfg, &s));
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_alphafold_options opt = {.all_heads = true};
    mf_alphafold_outputs out;
    mf_status st = mf_alphafold_inference(ctx, m, &ref->f, &opt, &out);
    MF_TEST_TRUE(st == MF_OK, "random tiny inference: %s", mf_last_error());
    if (st == MF_OK) {
        const int64_t L = out.sm_frames.shape[0], N = out.num_res;
        const float *fr = out.sm_frames.data, *pl = out.plddt.data, *sg = out.single.data;
        bool ident = true, uniform = true, finite = true;
        for (int64_t i = 0; i < L * N; i++) {
            const float want[7] = {1, 0, 0, 0, 0, 0, 0};
            for (int c = 0; c < 7; c++) ident = ident && fr[i * 7 + c] == want[c];
        }
        for (int64_t i = 0; i < N; i++) uniform = uniform && fabsf(pl[i] - 50.0f) < 1e-4f;
        for (int64_t i = 0; i < mf_tensor_numel(&out.single); i++)
            finite = finite && isfinite(sg[i]);
        MF_TEST_TRUE(ident, "zero affine_update must leave identity frames");
        MF_TEST_TRUE(uniform, "zero pLDDT logits must give pLDDT 50");
        MF_TEST_TRUE(finite, "non-finite single representation");
        printf("  identity frames %s, pLDDT 50 %s, finite single %s\n", ident ? "ok" : "FAIL",
               uniform ? "ok" : "FAIL", finite ? "ok" : "FAIL");
    }
    mf_arena_release(ctx->arena, mark);
    free(m);
    mf_param_store_free(&s);
}

/* A copy of f without feature `skip`. */
static mf_status copy_without(const mf_processed_features *f, const char *skip,
                              mf_processed_features *out)
{
    mf_processed_init(out);
    out->num_iterations = f->num_iterations;
    out->num_res = f->num_res;
    for (int i = 0; i < f->num_features; i++) {
        const mf_feature *ft = &f->features[i];
        if (!strcmp(ft->name, skip)) continue;
        const int lead = ft->per_iteration ? 1 : 0;
        void *data;
        MF_TRY(mf_processed_add(out, ft->name, ft->array.dtype, ft->per_iteration,
                                ft->array.ndim - lead, ft->array.shape + lead, &data));
        memcpy(data, ft->array.data,
               (size_t)mf_h5_array_numel(&ft->array) * mf_dtype_size(ft->array.dtype));
    }
    return MF_OK;
}

static void expect_error(mf_status st, mf_status code, const char *needle, const char *what)
{
    const char *msg = st == MF_OK ? "" : mf_last_error();
    const bool ok = st == code && strstr(msg, needle) != NULL;
    MF_TEST_TRUE(ok, "%s: expected %s naming '%s', got %s: %s", what, mf_status_name(code), needle,
                 mf_status_name(st), msg);
    printf("  %-44s %s: %s\n", what, ok ? "ok" : "FAIL", msg);
    mf_clear_error();
}

static void test_errors(mf_ctx *ctx, const loaded *l)
{
    printf("errors: missing feature, missing/unexpected parameters, multimer parameters\n");
    mf_processed_features f2;
    MF_TEST_OK(copy_without(&l->f, "extra_msa", &f2));
    mf_alphafold_options opt = {0};
    mf_alphafold_outputs out;
    size_t before = mf_arena_used(ctx->arena);
    expect_error(mf_alphafold_inference(ctx, &l->m, &f2, &opt, &out), MF_ERR_FORMAT, "'extra_msa'",
                 "features without extra_msa");
    MF_TEST_TRUE(mf_arena_used(ctx->arena) == before, "failed inference left arena allocations");
    mf_processed_free(&f2);

    /* one parameter missing, one unexpected */
    const char *drop = MF_STRUCTURE_MODULE_SCOPE "/fold_iteration/affine_update//bias";
    const char *extra = MF_EMBEDDERS_SCOPE "/not_a_module//weights";
    mf_param_store s;
    mf_param_store_init(&s);
    for (int i = 0; i < l->store.count; i++)
        if (strcmp(l->store.entries[i].name, drop))
            MF_TEST_OK(mf_param_store_add(&s, l->store.entries[i].name, &l->store.entries[i].tensor,
                                          false));
    float one = 1.0f;
    mf_tensor t1 = mf_tensor_f32(&one, 1, 1);
    MF_TEST_OK(mf_param_store_add(&s, extra, &t1, false));
    mf_alphafold_model *m = malloc(sizeof *m);
    mf_status st = mf_alphafold_bind(m, &l->cfg, &s);
    char msg[8192];
    snprintf(msg, sizeof msg, "%s", st == MF_OK ? "" : mf_last_error());
    expect_error(st, MF_ERR_FORMAT, "fold_iteration/affine_update//bias",
                 "a missing parameter is named");
    MF_TEST_TRUE(strstr(msg, "not_a_module//weights") != NULL,
                 "the unexpected parameter is not named: %s", msg);
    /* multimer */
    MF_TEST_OK(mf_param_store_add(&s,
                                  "alphafold/alphafold_iteration/evoformer/~_relative_encoding/"
                                  "position_activations//weights",
                                  &t1, false));
    expect_error(mf_alphafold_bind(m, &l->cfg, &s), MF_ERR_UNSUPPORTED, "multimer",
                 "multimer parameters refused");
    mf_config cfg;
    expect_error(mf_alphafold_config_for_params(&s, NULL, 2, &cfg), MF_ERR_UNSUPPORTED, "multimer",
                 "multimer refused by config inference");
    free(m);
    mf_param_store_free(&s);
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
    loaded *l = calloc(1, sizeof *l);
    if (!load_reference(l)) {
        mf_test_fail("loading the reference model: %s", mf_last_error());
    } else {
        test_dump_and_checker(&ctx, l);
        test_policies(&ctx, l);
        test_trunk_cpu(&ctx, l);
        test_recycling(&ctx, l);
        test_recycle_early_stop(&ctx, l);
        test_random_init(&ctx, l);
        test_errors(&ctx, l);
    }
    loaded_free(l);
    free(l);
    mf_test_ctx_free(&ctx, &arena);
    return mf_test_finish("test_model");
}
