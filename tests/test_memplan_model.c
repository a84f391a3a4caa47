/* The memory model of whole inference runs (model/memplan_model.h, model/alphafold_memplan.c)
 * against the arena: mf_alphafold_inference of randomly initialised small configurations (the
 * tiny preset and variants: templates on/off, torsion rows, block counts, pTM head) on random
 * features of several lengths, MSA depths, extra-MSA depths and template counts, under memory
 * policies (chunk off / 3 / 7, per-module chunks, in-place on/off, bf16 compute), with and
 * without all heads and 1-2 iterations. The predicted arena high-water mark must equal the
 * measured one within the 5%; the test prints the largest deviation over the grid (the
 * replay mirrors every allocation, so it is expected to be exact). */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "model/alphafold.h"
#include "model/alphafold_memplan.h"
#include "model/memplan_model.h"
#include "tests/support/mf_test.h"

static uint64_t lcg(uint64_t *st)
{
    *st = *st * 6364136223846793005ull + 1442695040888963407ull;
    return *st >> 33;
}

static void add_f32(mf_processed_features *f, const char *name, int ndim, const int64_t *shape,
                    float lo, float hi, uint64_t *st)
{
    void *p;
    if (mf_processed_add(f, name, MF_F32, false, ndim, shape, &p) != MF_OK) abort();
    int64_t n = 1;
    for (int k = 0; k < ndim; k++) n *= shape[k];
    float *x = p;
    for (int64_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * (float)(lcg(st) % 1000) / 1000.0f;
}

static void add_i32(mf_processed_features *f, const char *name, int ndim, const int64_t *shape,
                    int mod, bool iota, uint64_t *st)
{
    void *p;
    if (mf_processed_add(f, name, MF_I32, false, ndim, shape, &p) != MF_OK) abort();
    int64_t n = 1;
    for (int k = 0; k < ndim; k++) n *= shape[k];
    int32_t *x = p;
    for (int64_t i = 0; i < n; i++) x[i] = iota ? (int32_t)i : (int32_t)(lcg(st) % (uint64_t)mod);
}

static void make_features(mf_processed_features *f, int64_t N, int64_t S, int64_t E, int64_t T,
                          uint64_t seed)
{
    uint64_t st = seed;
    mf_processed_init(f);
    add_i32(f, "aatype", 1, (int64_t[]){N}, 20, false, &st);
    add_i32(f, "residue_index", 1, (int64_t[]){N}, 0, true, &st);
    add_f32(f, "seq_mask", 1, (int64_t[]){N}, 1, 1, &st);
    add_f32(f, "target_feat", 2, (int64_t[]){N, 22}, 0, 1, &st);
    add_f32(f, "msa_feat", 3, (int64_t[]){S, N, 49}, 0, 1, &st);
    add_f32(f, "msa_mask", 2, (int64_t[]){S, N}, 1, 1, &st);
    add_i32(f, "extra_msa", 2, (int64_t[]){E, N}, 22, false, &st);
    add_f32(f, "extra_msa_mask", 2, (int64_t[]){E, N}, 1, 1, &st);
    add_f32(f, "extra_has_deletion", 2, (int64_t[]){E, N}, 0, 1, &st);
    add_f32(f, "extra_deletion_value", 2, (int64_t[]){E, N}, 0, 1, &st);
    if (T == 0) return;
    add_i32(f, "template_aatype", 2, (int64_t[]){T, N}, 20, false, &st);
    add_f32(f, "template_all_atom_positions", 4, (int64_t[]){T, N, 37, 3}, -10, 10, &st);
    add_f32(f, "template_all_atom_mask", 3, (int64_t[]){T, N, 37}, 1, 1, &st);
    add_f32(f, "template_pseudo_beta", 3, (int64_t[]){T, N, 3}, -10, 10, &st);
    add_f32(f, "template_pseudo_beta_mask", 2, (int64_t[]){T, N}, 1, 1, &st);
    add_f32(f, "template_mask", 1, (int64_t[]){T}, 1, 1, &st);
    add_f32(f, "template_torsion_angles_sin_cos", 4, (int64_t[]){T, N, 7, 2}, -1, 1, &st);
    add_f32(f, "template_alt_torsion_angles_sin_cos", 4, (int64_t[]){T, N, 7, 2}, -1, 1, &st);
    add_f32(f, "template_torsion_angles_mask", 3, (int64_t[]){T, N, 7}, 1, 1, &st);
}

static double worst;
static int cases;
static mf_ctx g_trunk; /* a second CPU context: the trunk of the split runs */
static mf_arena g_trunk_arena;

/* The same inference with the trunk on g_trunk (options.trunk_ctx, the parameters mirrored into
 * its arena): both arenas' peaks and what each leaves, exactly as the split plan replays them. */
static void run_split(mf_ctx *ctx, const mf_alphafold_model *m, const mf_param_store *store,
                      const mf_config *cfg, const mf_processed_features *f,
                      const mf_alphafold_options *opt, const mf_memplan_shape *sh, const char *what)
{
    mf_arena *ta = &g_trunk_arena;
    const mf_arena_mark_t tmark = mf_arena_mark(ta);
    mf_param_store ts;
    mf_param_store_init(&ts);
    mf_alphafold_model *tm = calloc(1, sizeof *tm);
    MF_TEST_OK(mf_param_store_mirror(store, ta, &ts));
    MF_TEST_OK(mf_alphafold_bind(tm, cfg, &ts));
    g_trunk.policy = ctx->policy;
    mf_alphafold_options o = *opt;
    o.trunk_ctx = &g_trunk;
    o.trunk_model = tm;
    mf_alphafold_outputs out;
    const mf_arena_mark_t hmark = mf_arena_mark(ctx->arena);
    const size_t hbase = mf_arena_used(ctx->arena), tbase = mf_arena_used(ta);
    mf_arena_reset_peak(ctx->arena);
    mf_arena_reset_peak(ta);
    MF_TEST_OK(mf_alphafold_inference(ctx, m, f, &o, &out));
    const size_t hpeak = mf_arena_high_water(ctx->arena) - hbase,
                 hleft = mf_arena_used(ctx->arena) - hbase;
    const size_t tpeak = mf_arena_high_water(ta) - tbase, tleft = mf_arena_used(ta) - tbase;
    mf_arena_release(ctx->arena, hmark);
    mf_memsim hs, tsim;
    mf_memsim_init(&hs, ctx, MF_DEV_CPU, &ctx->policy);
    mf_memsim_init(&tsim, &g_trunk, MF_DEV_CPU, &ctx->policy);
    mf_alphafold_plan_inference_split(&hs, &tsim, m, sh);
    cases++;
    MF_TEST_TRUE(hs.peak == hpeak && hs.cur == hleft && tsim.peak == tpeak && tsim.cur == tleft &&
                     tleft == 0,
                 "%s N %lld, trunk context: host peak %zu left %zu (plan %zu, %zu), trunk peak "
                 "%zu left %zu (plan %zu, %zu)",
                 what, (long long)sh->n_res, hpeak, hleft, hs.peak, hs.cur, tpeak, tleft, tsim.peak,
                 tsim.cur);
    mf_arena_release(ta, tmark);
    mf_param_store_free(&ts);
    free(tm);
}

static void run_case(mf_ctx *ctx, const mf_config *cfg, const char *what, int64_t N, int64_t S,
                     int64_t E, int64_t T, int64_t iters, bool all_heads, uint64_t seed)
{
    mf_param_store store;
    mf_param_store_init(&store);
    mf_alphafold_model *m = calloc(1, sizeof *m);
    mf_processed_features f;
    make_features(&f, N, S, E, T, seed);
    MF_TEST_OK(mf_alphafold_random_params(cfg, seed, &store));
    MF_TEST_OK(mf_alphafold_bind(m, cfg, &store));
    mf_alphafold_options opt = {.num_iterations = iters, .all_heads = all_heads};
    mf_alphafold_outputs out;
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    const size_t base = mf_arena_used(ctx->arena);
    mf_arena_reset_peak(ctx->arena);
    MF_TEST_OK(mf_alphafold_inference(ctx, m, &f, &opt, &out));
    const size_t real = mf_arena_high_water(ctx->arena) - base;
    const size_t real_left = mf_arena_used(ctx->arena) - base;
    mf_arena_release(ctx->arena, mark);

    mf_memplan_shape sh = {.n_res = N,
                           .n_seq = S,
                           .n_extra = E,
                           .n_templ = T,
                           .iterations = iters,
                           .all_heads = all_heads};
    mf_memplan_result r;
    MF_TEST_OK(mf_memplan_evaluate(ctx, cfg, &ctx->policy, MF_DEV_CPU, &sh, &r));
    {
        /* what the inference leaves for its caller, replayed directly */
        mf_memsim s;
        mf_memsim_init(&s, ctx, MF_DEV_CPU, &ctx->policy);
        mf_alphafold_plan_inference(&s, m, &sh);
        MF_TEST_TRUE(s.cur == real_left && s.peak == r.arena_peak,
                     "%s N %lld: plan leaves %zu bytes, the inference %zu", what, (long long)N,
                     s.cur, real_left);
    }
    run_split(ctx, m, &store, cfg, &f, &opt, &sh, what);
    const double dev = real ? fabs((double)r.arena_peak - (double)real) / (double)real : 1;
    if (dev > worst) worst = dev;
    cases++;
    char pol[256];
    mf_policy_describe(&ctx->policy, pol, sizeof pol);
    if (dev != 0 || cases % 8 == 1)
        printf("  %-22s N %3lld S %2lld E %2lld T %lld it %lld heads %d  %s: measured %zu "
               "predicted %zu (%+.3f%%)\n",
               what, (long long)N, (long long)S, (long long)E, (long long)T, (long long)iters,
               all_heads, pol, real, r.arena_peak, 100.0 * dev);
    MF_TEST_TRUE(dev <= 0.05, "%s N %lld (%s): predicted %zu, measured %zu (%.2f%% off)", what,
                 (long long)N, pol, r.arena_peak, real, 100 * dev);
    mf_processed_free(&f);
    mf_param_store_free(&store);
    free(m);
}

int main(void)
{
    /* one thread: fast on a loaded machine; the plans' workspace queries see the same count */
    omp_set_num_threads(1);
    mf_arena arena;
    mf_ctx ctx;
    MF_TEST_OK(mf_arena_init(&arena, MF_DEV_CPU, (size_t)2 << 30, "test activations"));
    MF_TEST_OK(mf_ctx_init(&ctx, MF_DEV_CPU, &arena));
    MF_TEST_OK(mf_test_ctx_cpu(&g_trunk, &g_trunk_arena, (size_t)1 << 30));
    mf_config tiny, notempl, deep, ptm;
    MF_TEST_OK(mf_config_preset("tiny", &tiny));
    notempl = tiny;
    notempl.template_embedding.enabled = false;
    deep = tiny;
    deep.evoformer.num_blocks = 3;
    deep.extra_msa_stack.num_blocks = 2;
    deep.template_embedding.embed_torsion_angles = false;
    ptm = tiny;
    ptm.heads.predicted_aligned_error_enabled = true;
    const struct {
        const char *name;
        const mf_config *cfg;
    } cfgs[] = {{"tiny", &tiny},
                {"tiny no templates", &notempl},
                {"tiny 3+2 blocks", &deep},
                {"tiny pTM", &ptm}};
    const char *policies[][2] = {{"chunk", "off"},    {"chunk", "3"},
                                 {"chunk", "7"},      {"inplace", "on"},
                                 {"compute", "bf16"}, {"chunk.triangle_multiplication", "2"}};
    uint64_t seed = 1;
    for (size_t c = 0; c < sizeof cfgs / sizeof cfgs[0]; c++) {
        const int64_t lengths[][4] = {{9, 3, 5, 2}, {16, 5, 0, 1}, {23, 4, 7, 3}};
        for (size_t l = 0; l < 3; l++)
            for (size_t p = 0; p < sizeof policies / sizeof policies[0]; p++) {
                ctx.policy = mf_policy_default();
                if (p >= 3) mf_policy_set(&ctx.policy, "chunk", "4");
                MF_TEST_OK(mf_policy_set(&ctx.policy, policies[p][0], policies[p][1]));
                const int64_t *L = lengths[l];
                run_case(&ctx, cfgs[c].cfg, cfgs[c].name, L[0], L[1], L[2],
                         cfgs[c].cfg->template_embedding.enabled ? L[3] : 0, 1 + (int64_t)(p % 2),
                         (p + l) % 2 == 0, seed++);
            }
    }
    printf("memory model, whole inference: %d cases (half of them with the trunk on a second "
           "context), largest deviation %.4f%% (bar 5%%)\n",
           cases, 100 * worst);
    mf_test_ctx_free(&g_trunk, &g_trunk_arena);
    mf_ctx_destroy(&ctx);
    mf_arena_destroy(&arena);
    return mf_test_finish("test_memplan_model");
}
