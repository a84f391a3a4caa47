/* The memory model of a whole training step (model/train_step.h: mf_train_step_plan) against the
 * real mf_train_step on a CPU arena: a tiny random model and a pTM variant (dropout rates, the
 * aligned-error head, no template torsion rows), features resampled from
 * shared/testvectors/features.h5 to several sizes (residues, MSA clusters, extra rows,
 * templates: multiples of the chunk and not, no extra row, no template; one sample outside the
 * pLDDT loss's resolution filter), 1 and 2 recycling iterations, over the policies recompute off
 * / block / every:2, chunk off / 4, storage f32 / bf16 (compute bf16 in some), with and without
 * training dropout. The plan runs on the dims of the configuration alone
 * (mf_alphafold_model_dims), as the CLI does. Required: the predicted arena peak equals
 * res->arena_peak EXACTLY and the step leaves the arena where it was. Then the model state:
 * mf_model_state_bytes against the arena bytes of the parameters loaded into an arena and of the
 * gradient buffer and the optimizer's buffers. */
#include <stdlib.h>
#include <string.h>
#include <omp.h>
#include <unistd.h>

#include "model/train_step.h"
#include "tests/support/mf_test.h"
#include "train/optimizer.h"

static int64_t rnd(uint64_t *st, int64_t lo, int64_t hi)
{
    *st = *st * 6364136223846793005ull + 1442695040888963407ull;
    return lo + (int64_t)((*st >> 33) % (uint64_t)(hi - lo + 1));
}

static bool name_in(const char *name, const char *const *list, int n)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(name, list[i])) return true;
    return false;
}

/* The features resampled to N residues, S MSA rows, E extra rows and T templates: every axis of
 * the source's residue count maps index i to (r0 + i) mod N_in, the row axes to (row mod
 * rows_in); T == 0 drops the template features. */
static mf_status resample(const mf_processed_features *in, mf_processed_features *out, int64_t r0,
                          int64_t N, int64_t S, int64_t E, int64_t T)
{
    static const char *const msa_rows[] = {"msa_feat", "msa_mask", "true_msa", "bert_mask",
                                           "msa_row_mask"};
    static const char *const extra_rows[] = {"extra_msa", "extra_msa_mask", "extra_has_deletion",
                                             "extra_deletion_value", "extra_msa_row_mask"};
    mf_processed_init(out);
    out->num_iterations = in->num_iterations;
    out->num_res = N;
    const int64_t Nin = in->num_res;
    for (int i = 0; i < in->num_features; i++) {
        const mf_feature *x = &in->features[i];
        const bool templ = !strncmp(x->name, "template_", 9);
        if (templ && T == 0) continue;
        const int skip = x->per_iteration ? 1 : 0, nd = x->array.ndim - skip;
        int64_t count[MF_H5_MAX_DIMS], src[MF_H5_MAX_DIMS];
        for (int k = 0; k < nd; k++) {
            src[k] = x->array.shape[k + skip];
            count[k] = src[k] == Nin ? N : src[k];
        }
        if (name_in(x->name, msa_rows, 5)) count[0] = S;
        if (name_in(x->name, extra_rows, 5)) count[0] = E;
        if (templ) count[0] = T;
        void *data;
        MF_TRY(mf_processed_add(out, x->name, x->array.dtype, x->per_iteration, nd, count, &data));
        const size_t es = mf_dtype_size(x->array.dtype);
        int64_t total = 1, rin = 1, strides[MF_H5_MAX_DIMS];
        for (int k = 0; k < nd; k++) total *= count[k];
        for (int k = nd - 1; k >= 0; k--) strides[k] = rin, rin *= src[k];
        const int64_t R = skip ? x->array.shape[0] : 1;
        for (int64_t r = 0; r < R; r++)
            for (int64_t o = 0; o < total; o++) {
                int64_t rem = o, off = r * rin;
                for (int k = nd - 1; k >= 0; k--) {
                    const int64_t j = rem % count[k];
                    rem /= count[k];
                    const int64_t sj = src[k] == Nin && count[k] == N ? (r0 + j) % Nin : j % src[k];
                    off += sj * strides[k];
                }
                memcpy((char *)data + (size_t)(r * total + o) * es,
                       (const char *)x->array.data + (size_t)off * es, es);
            }
    }
    return MF_OK;
}

typedef struct {
    const char *name;
    mf_config cfg;
    mf_param_store params;
    mf_grad_buffer grads;
    mf_alphafold_model m, g, dims;
} model;

static mf_status model_init(model *x, const char *name, bool ptm)
{
    memset(x, 0, sizeof *x);
    x->name = name;
    mf_param_store_init(&x->params);
    MF_TRY(mf_config_preset("tiny", &x->cfg));
    /* smaller than tiny where the sizes do not change the structure of the run */
    x->cfg.channels = (mf_channels_config){.c_m = 8, .c_z = 6, .c_t = 5, .c_e = 4, .c_s = 7};
    x->cfg.evoformer.num_blocks = 2;
    if (ptm) {
        /* a pTM model with AF2's training dropout rates in its stacks and structure module */
        x->cfg.heads.predicted_aligned_error_enabled = true;
        x->cfg.loss.weights.predicted_aligned_error = 0.1;
        x->cfg.evoformer.msa_row_attention.dropout_rate = 0.15;
        x->cfg.evoformer.triangle_multiplication_dropout_rate = 0.25;
        x->cfg.evoformer.triangle_attention.dropout_rate = 0.25;
        x->cfg.extra_msa_stack.triangle_attention.dropout_rate = 0.25;
        x->cfg.template_embedding.pair_stack.triangle_attention.dropout_rate = 0.25;
        x->cfg.structure_module.dropout_rate = 0.1;
        x->cfg.template_embedding.pair_stack.num_blocks = 2;
        /* templates without their torsion-angle MSA rows */
        x->cfg.template_embedding.embed_torsion_angles = false;
    }
    MF_TRY(mf_config_validate(&x->cfg, name));
    MF_TRY(mf_alphafold_random_params(&x->cfg, 5, &x->params));
    MF_TRY(mf_alphafold_bind(&x->m, &x->cfg, &x->params));
    MF_TRY(mf_grad_buffer_init(&x->grads, &x->params, NULL));
    MF_TRY(mf_alphafold_bind(&x->g, &x->cfg, &x->grads.views));
    return mf_alphafold_model_dims(&x->dims, &x->cfg);
}

static void model_free(model *x)
{
    mf_grad_buffer_free(&x->grads);
    mf_param_store_free(&x->params);
}

static int cases, mismatches;
static double worst_rel;
static mf_ctx g_trunk; /* a second CPU context: the trunk of the split steps */
static mf_arena g_trunk_arena;

/* The same step with the trunk on g_trunk (the parameters and gradients mirrored into its arena),
 * its checkpoints offloaded to the host context's arena when `offload`: both arenas' peaks
 * exactly as mf_train_step_plan_split replays them. */
static void compare_split(mf_ctx *ctx, model *x, const mf_processed_features *f, int64_t S,
                          int64_t E, int64_t T, const mf_train_step_options *base,
                          const mf_train_step_plan_options *po, bool offload, const char *desc)
{
    mf_arena *ta = &g_trunk_arena;
    const mf_arena_mark_t tmark = mf_arena_mark(ta);
    mf_param_store tp, tgs;
    mf_param_store_init(&tp);
    mf_param_store_init(&tgs);
    mf_alphafold_model *tm = calloc(1, sizeof *tm), *tg = calloc(1, sizeof *tg);
    MF_TEST_OK(mf_param_store_mirror(&x->params, ta, &tp));
    MF_TEST_OK(mf_param_store_mirror(&x->grads.views, ta, &tgs));
    MF_TEST_OK(mf_alphafold_bind(tm, &x->cfg, &tp));
    MF_TEST_OK(mf_alphafold_bind(tg, &x->cfg, &tgs));
    g_trunk.policy = ctx->policy;
    g_trunk.policy.offload = offload;
    g_trunk.host_arena = offload ? ctx->arena : NULL;
    mf_train_step_options opt = *base;
    opt.trunk_ctx = &g_trunk;
    opt.trunk_model = tm;
    opt.trunk_grads = tg;
    mf_train_step_result res;
    mf_status st = mf_train_step(ctx, &x->m, &x->g, f, &opt, &res, NULL);
    MF_TEST_TRUE(st == MF_OK, "%s, trunk context: %s", desc, st ? mf_last_error() : "");
    if (st == MF_OK) {
        mf_memsim hs, tsim;
        mf_memsim_init(&hs, ctx, MF_DEV_CPU, &ctx->policy);
        mf_memsim_init(&tsim, &g_trunk, MF_DEV_CPU, &g_trunk.policy);
        if (offload) tsim.offload_to = &hs;
        mf_train_step_plan_split(&hs, &tsim, &x->dims, f->num_res, S, E, T, opt.num_iterations, po);
        cases++;
        const bool ok = hs.peak == res.arena_peak && tsim.peak == res.trunk_arena_peak &&
                        hs.cur == 0 && tsim.cur == 0 && hs.status == MF_OK && tsim.status == MF_OK;
        if (!ok) mismatches++;
        MF_TEST_TRUE(ok,
                     "%s, trunk context%s: host peak %zu plan %zu, trunk peak %zu plan %zu "
                     "(left %zu, %zu)",
                     desc, offload ? " + offload" : "", res.arena_peak, hs.peak,
                     res.trunk_arena_peak, tsim.peak, hs.cur, tsim.cur);
    }
    g_trunk.host_arena = NULL;
    mf_arena_release(ta, tmark);
    mf_param_store_free(&tgs);
    mf_param_store_free(&tp);
    free(tm);
    free(tg);
}

static void compare_step(mf_ctx *ctx, model *x, const mf_processed_features *f, int64_t S,
                         int64_t E, int64_t T, int64_t iterations, bool dropout, float resolution)
{
    char pol[200], desc[400];
    mf_policy_describe(&ctx->policy, pol, sizeof pol);
    snprintf(desc, sizeof desc, "%s N %lld S %lld E %lld T %lld iterations %lld dropout %d [%s]",
             x->name, (long long)f->num_res, (long long)S, (long long)E, (long long)T,
             (long long)iterations, dropout, pol);
    mf_train_step_options opt = mf_train_step_default_options();
    opt.num_iterations = iterations;
    opt.dropout = dropout;
    opt.dropout_seed = 3;
    mf_train_step_result res;
    const size_t used0 = mf_arena_used(ctx->arena);
    mf_grad_buffer_zero(&x->grads);
    mf_status st = mf_train_step(ctx, &x->m, &x->g, f, &opt, &res, NULL);
    MF_TEST_TRUE(st == MF_OK, "%s: train step failed: %s", desc, mf_last_error());
    if (st != MF_OK) return;
    MF_TEST_TRUE(mf_arena_used(ctx->arena) == used0, "%s: the step left arena bytes", desc);
    mf_memsim s;
    mf_memsim_init(&s, ctx, MF_DEV_CPU, &ctx->policy);
    mf_train_step_plan_options po = mf_train_step_plan_default_options();
    po.dropout = dropout;
    po.resolution = resolution;
    mf_train_step_plan(&s, &x->dims, f->num_res, S, E, T, iterations, &po);
    cases++;
    const double rel =
        res.arena_peak ? ((double)s.peak - (double)res.arena_peak) / (double)res.arena_peak : 0;
    if ((rel < 0 ? -rel : rel) > (worst_rel < 0 ? -worst_rel : worst_rel)) worst_rel = rel;
    const bool ok = s.peak == res.arena_peak && s.cur == 0 && s.status == MF_OK;
    if (!ok) mismatches++;
    MF_TEST_TRUE(ok, "%s: plan peak %zu (left %zu), arena peak %zu (%+.3f%%)", desc, s.peak, s.cur,
                 res.arena_peak, 100 * rel);
    compare_split(ctx, x, f, S, E, T, &opt, &po, false, desc);
    if (ctx->policy.recompute != MF_RECOMPUTE_OFF)
        compare_split(ctx, x, f, S, E, T, &opt, &po, true, desc);
}

/* mf_model_state_bytes against the arena: the parameters loaded into an arena (through an HDF5
 * file, as a trainer would load them), then the gradient buffer and the optimizer's buffers. */
static void check_state_bytes(model *x)
{
    char path[256];
    snprintf(path, sizeof path, "%s/memfold-test-memplan-%d.h5",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (int)getpid());
    MF_TEST_OK(mf_param_store_save_h5(&x->params, path));
    mf_arena a;
    MF_TEST_OK(mf_arena_init(&a, MF_DEV_CPU, (size_t)1 << 28, "state"));
    mf_param_store p;
    mf_param_store_init(&p);
    MF_TEST_OK(mf_param_store_load_h5(&p, path, &a));
    unlink(path);
    const size_t params = mf_arena_used(&a);
    mf_grad_buffer gb;
    mf_optimizer o;
    MF_TEST_OK(mf_grad_buffer_init(&gb, &p, &a));
    MF_TEST_OK(mf_optimizer_init(&o, &p, &x->cfg.optimizer, MF_CLIP_NONE, &a));
    const size_t all = mf_arena_used(&a);
    const size_t pred_params = mf_model_state_bytes(&x->cfg, false);
    const size_t pred_all = mf_model_state_bytes(&x->cfg, true);
    MF_TEST_TRUE(pred_params == params && pred_all == all,
                 "%s model state: predicted %zu / %zu (inference / training), arena %zu / %zu",
                 x->name, pred_params, pred_all, params, all);
    printf("%s model state: %zu bytes of parameters, %zu with gradients, Adam and EMA "
           "(%d arrays)\n",
           x->name, params, all, p.count);
    mf_optimizer_free(&o);
    mf_grad_buffer_free(&gb);
    mf_param_store_free(&p);
    mf_arena_destroy(&a);
}

int main(void)
{
    const char *dir = mf_test_shared_dir();
    char path[512];
    snprintf(path, sizeof path, "%s/testvectors/features.h5", dir);
    mf_processed_features src;
    mf_processed_init(&src);
    if (access(path, R_OK) != 0) return mf_test_skip("shared/testvectors/features.h5 is missing");
    MF_TEST_OK(mf_processed_read(path, &src));
    const mf_feature *res_f = mf_processed_find(&src, "resolution");
    MF_TEST_TRUE(res_f != NULL, "features.h5 has a resolution");
    const float resolution = res_f ? *(const float *)res_f->array.data : 1.0f;

    /* one thread: tiny sizes, where waking threads costs more than it saves on a loaded machine
     * (the plan asks the workspace of the same oneDNN configuration, so any thread count
     * matches; test_memplan_ops and test_memplan_embedders run with the default count) */
    omp_set_num_threads(1);
    mf_arena arena;
    mf_ctx ctx;
    MF_TEST_OK(mf_test_ctx_cpu(&ctx, &arena, (size_t)1 << 30));
    MF_TEST_OK(mf_test_ctx_cpu(&g_trunk, &g_trunk_arena, (size_t)1 << 30));
    static model models[2];
    MF_TEST_OK(model_init(&models[0], "tiny", false));
    MF_TEST_OK(model_init(&models[1], "tiny pTM", true));

    /* residues, clusters, extra rows, templates */
    const int64_t shapes[][4] = {{24, 8, 16, 2}, {13, 5, 0, 1}, {30, 3, 7, 0}, {9, 1, 3, 2}};
    const int nshapes = (int)(sizeof shapes / sizeof shapes[0]);
    uint64_t st = 99;
    for (int sh = 0; sh < nshapes; sh++) {
        const int64_t N = shapes[sh][0], S = shapes[sh][1], E = shapes[sh][2], T = shapes[sh][3];
        mf_processed_features f;
        MF_TEST_OK(resample(&src, &f, rnd(&st, 0, src.num_res - 1), N, S, E, T));
        /* the last shape as an NMR-like sample (resolution 0): outside the pLDDT loss's filter,
         * whose backward then takes no scratch */
        float res_value = resolution;
        if (sh == nshapes - 1) {
            const mf_feature *r = mf_processed_find(&f, "resolution");
            if (r) *(float *)r->array.data = res_value = 0.0f;
        }
        for (int pi = 0; pi < 12; pi++) {
            /* recompute off / block / every:2 x chunk off / 4 x storage f32 / bf16 */
            ctx.policy = mf_policy_default();
            ctx.policy.recompute = pi % 3 == 0   ? MF_RECOMPUTE_OFF
                                   : pi % 3 == 1 ? MF_RECOMPUTE_BLOCK
                                                 : MF_RECOMPUTE_EVERY_K;
            ctx.policy.recompute_every = 2;
            ctx.policy.chunk_size = (pi / 3) % 2 ? 4 : 0;
            ctx.policy.storage = pi / 6 ? MF_BF16 : MF_F32;
            /* bf16 matrix products now and then (their operand copies are workspace) */
            ctx.policy.compute = (pi + sh) % 5 == 2 ? MF_BF16 : MF_F32;
            model *x = &models[(pi + sh) % 2];
            const int64_t iterations = (pi + sh) % 4 < 2 ? 1 : 2;
            const bool dropout = (pi + sh) % 3 == 1;
            /* the plan's default resolution (inside the filter) where the sample's is too */
            const float plan_res = pi % 4 == 0 && res_value > 0 ? -1.0f : res_value;
            compare_step(&ctx, x, &f, S, E, T, iterations, dropout, plan_res);
        }
        mf_processed_free(&f);
    }
    printf("memplan train step: %d steps, %d mismatches, worst deviation %+.4f%% of the arena peak "
           "(exact required)\n",
           cases, mismatches, 100 * worst_rel);
    check_state_bytes(&models[0]);
    check_state_bytes(&models[1]);
    model_free(&models[0]);
    model_free(&models[1]);
    mf_processed_free(&src);
    mf_test_ctx_free(&g_trunk, &g_trunk_arena);
    mf_test_ctx_free(&ctx, &arena);
    return mf_test_finish("test_memplan_train_step");
}
