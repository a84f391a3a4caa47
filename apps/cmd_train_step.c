/* memfold train-step: one deterministic AlphaFold 2 training step (forward with recycling, the
 * loss, the backward to every parameter) on one sample's processed features; prints the loss
 * terms, writes them and every gradient in train_expected.h5's layout (--dump) and compares them
 * with a reference file (--check). */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "apps/cli.h"
#include "apps/commands.h"
#include "model/memplan_model.h"
#include "data/processed.h"
#include "model/train_step.h"
#include "train/optimizer.h"

#define MAX_SETS 64

static void train_step_usage(FILE *f)
{
    fprintf(
        f, "usage: memfold train-step --features FILE.h5 (--params P | --random-init SEED --config "
           "C)\n"
           "                          [--config C] [--set K=V ...] [--device cpu|cuda]\n"
           "                          [--recycles N] [--structure-layers N] [--chunk N|auto]\n"
           "                          [--mem-budget G]\n"
           "                          [--recompute off|block|every:K] [--storage f32|bf16]\n"
           "                          [--offload on|off]\n"
           "                          [--compute f32|bf16] [--dropout-seed S] [--dump OUT.h5]\n"
           "                          [--check REF.h5] [--verbose] [--arena-gib G]\n"
           "                          [--memory-table]\n"
           "\n"
           "One AlphaFold 2 training step: the recycling iterations before the last\n"
           "run as inference (stop-gradient), the last one with saved activations, the loss on\n"
           "its features (use_clamped_fape from the features), d loss/total / d every parameter.\n"
           "  --features FILE.h5   processed features with the ground truth (data/processed.h)\n"
           "  --params P           .npz (official AF2 layout) or memfold HDF5 parameters\n"
           "  --random-init SEED   AF2's initialisers instead (needs --config)\n"
           "  --device cuda        the trunk (embedders, stacks, Evoformer) forward and backward\n"
           "                       on the GPU; structure module, heads and losses on the host\n"
           "                       (default cpu); prints the GPU arena's peak too\n"
           "  --gpu-arena-gib G    GPU arena reservation (default: 90%% of the free GPU memory)\n"
           "  --config C           preset or JSON file (default: sizes from the parameter shapes,\n"
           "                       losses of AF2 fine-tuning: all seven terms, suppl. Table 4)\n"
           "  --set K=V            configuration override (e.g. loss.weights.violation=0)\n"
           "  --recycles N         AF2 num_recycle: N+1 iterations (default: the features'\n"
           "                       recycling axis R), slice r mod R of the per-iteration features\n"
           "  --structure-layers N structure-module layers (no parameter records it; AF2: 8)\n"
           "  --chunk, --recompute, --storage, --compute   memory policy (default: none)\n"
           "  --offload on|off     recomputation checkpoints in host memory: with --device cuda\n"
           "                       the GPU keeps none of them (on the CPU they are host memory\n"
           "                       already)\n"
           "  --chunk auto --mem-budget G   per module, the largest chunk that keeps the memory\n"
           "                       model's predicted total within G GiB (memfold memplan);\n"
           "                       prints the choice and the predicted arena peak\n"
           "  --dropout-seed S     AF2 training dropout in the trained iteration (default: off)\n"
           "  --dump OUT.h5        loss/, loss_unclamped/, grads/<AF2 name, '/' -> '|'>,\n"
           "                       train_outputs/ (the layout of testvectors train_expected.h5)\n"
           "  --check REF.h5       compare with a reference of that layout: loss terms and train\n"
           "                       outputs max|a-ref|/max|ref| <= 1e-4, gradients <= 1e-3 (the\n"
           "                       compare = absolute ones against grads.attrs[\"grad_scale\"]);\n"
           "                       exit status 1 on any failure\n"
           "  --verbose            print every compared dataset (default: losses, worst 10)\n"
           "  --arena-gib G        activation arena reservation (default: physical memory)\n"
           "  --memory-table       print the arena's bytes per label\n");
}

typedef struct {
    const char *features, *params, *config, *dump, *check;
    const char *sets[MAX_SETS];
    int n_sets;
    int64_t recycles, structure_layers;
    mf_policy policy;
    bool dropout, verbose, memory_table;
    bool chunk_auto;   /* --chunk auto */
    double mem_budget; /* --mem-budget GiB */
    uint64_t dropout_seed;
    double arena_gib, gpu_arena_gib;
    bool random_init, cuda;
    uint64_t init_seed;
} options;

static int usage_error(const char *what, const char *arg)
{
    fprintf(stderr, "memfold train-step: %s%s%s\n", what, arg ? " " : "", arg ? arg : "");
    train_step_usage(stderr);
    return 2;
}

/* 0: parsed; -1: --help printed; else the exit code of a usage error. */
static int parse_args(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    o->recycles = -1;
    o->policy = mf_policy_default();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            train_step_usage(stdout);
            return -1;
        }
        if (!strcmp(a, "--verbose")) {
            o->verbose = true;
            continue;
        }
        if (!strcmp(a, "--memory-table")) {
            o->memory_table = true;
            continue;
        }
        if (i + 1 >= argc) return usage_error("missing value after", a);
        const char *v = argv[++i];
        int64_t n;
        if (!strcmp(a, "--features")) {
            o->features = v;
        } else if (!strcmp(a, "--params")) {
            o->params = v;
        } else if (!strcmp(a, "--config")) {
            o->config = v;
        } else if (!strcmp(a, "--set")) {
            if (o->n_sets == MAX_SETS) return usage_error("too many --set", NULL);
            o->sets[o->n_sets++] = v;
        } else if (!strcmp(a, "--dump")) {
            o->dump = v;
        } else if (!strcmp(a, "--check")) {
            o->check = v;
        } else if (!strcmp(a, "--recycles")) {
            if (!mf_cli_parse_i64(v, 0, &o->recycles))
                return usage_error("--recycles: expected N >= 0", v);
        } else if (!strcmp(a, "--structure-layers")) {
            if (!mf_cli_parse_i64(v, 1, &o->structure_layers))
                return usage_error("--structure-layers: expected N >= 1", v);
        } else if (!strcmp(a, "--chunk") && !strcmp(v, "auto")) {
            o->chunk_auto = true;
        } else if (!strcmp(a, "--mem-budget")) {
            char *end;
            o->mem_budget = strtod(v, &end);
            if (*end || !(o->mem_budget > 0)) return usage_error("--mem-budget: expected GiB", v);
        } else if (!strcmp(a, "--chunk")) {
            if (!mf_cli_parse_i64(v, 0, &n)) return usage_error("--chunk: expected N >= 0", v);
            o->policy.chunk_size = n;
        } else if (!strcmp(a, "--recompute") || !strcmp(a, "--storage") ||
                   !strcmp(a, "--compute") || !strcmp(a, "--offload")) {
            if (mf_policy_set(&o->policy, a + 2, v) != MF_OK) {
                fprintf(stderr, "memfold train-step: %s\n", mf_last_error());
                return 2;
            }
        } else if (!strcmp(a, "--dropout-seed")) {
            if (!mf_cli_parse_i64(v, 0, &n))
                return usage_error("--dropout-seed: expected S >= 0", v);
            o->dropout = true;
            o->dropout_seed = (uint64_t)n;
        } else if (!strcmp(a, "--arena-gib")) {
            char *end;
            o->arena_gib = strtod(v, &end);
            if (*end || !(o->arena_gib > 0)) return usage_error("--arena-gib: expected GiB", v);
        } else if (!strcmp(a, "--random-init")) {
            if (!mf_cli_parse_i64(v, 0, &n))
                return usage_error("--random-init: expected a seed", v);
            o->random_init = true;
            o->init_seed = (uint64_t)n;
        } else if (!strcmp(a, "--device")) {
            if (strcmp(v, "cpu") && strcmp(v, "cuda"))
                return usage_error("--device: expected cpu or cuda", v);
            o->cuda = !strcmp(v, "cuda");
        } else if (!strcmp(a, "--gpu-arena-gib")) {
            char *end;
            o->gpu_arena_gib = strtod(v, &end);
            if (*end || !(o->gpu_arena_gib > 0))
                return usage_error("--gpu-arena-gib: expected GiB", v);
        } else {
            return usage_error("unknown option", a);
        }
    }
    if (!o->features) return usage_error("--features is required", NULL);
    if (o->chunk_auto != (o->mem_budget > 0))
        return usage_error("--chunk auto and --mem-budget G go together", NULL);
    if (!o->params == !o->random_init)
        return usage_error("give --params P or --random-init SEED", NULL);
    if (o->random_init && !o->config)
        return usage_error("--random-init needs --config (a preset such as af2-initial)", NULL);
    if (o->gpu_arena_gib > 0 && !o->cuda)
        return usage_error("--gpu-arena-gib needs --device cuda", NULL);
    return 0;
}

/* The configuration: --config as given, else the sizes the parameters record with AF2's
 * fine-tuning losses (the reference step's seven terms); then --structure-layers and --set. */
static mf_status make_config(const options *o, const mf_param_store *store, mf_config *cfg)
{
    MF_TRY(mf_alphafold_config_for_params(store, o->config, o->structure_layers, cfg));
    if (!o->config) {
        mf_config ft;
        MF_TRY(mf_config_preset("af2-finetune", &ft));
        cfg->loss = ft.loss;
    }
    for (int k = 0; k < o->n_sets; k++) MF_TRY(mf_config_set_assignment(cfg, o->sets[k]));
    return mf_config_validate(cfg, o->config ? o->config : "configuration from parameters");
}

static void print_losses(const char *group, const mf_loss_values *v)
{
    printf("%s:\n", group);
    for (int k = 0; k < MF_LOSS_NUM_TERMS; k++)
        if (v->present[k])
            printf("  %-26s %12.6f  (weight %g)\n", mf_loss_term_name(k), v->term[k], v->weight[k]);
    printf("  %-26s %12.6f\n  %-26s %12.6f  (x %.6f)\n", "unscaled_loss", v->unscaled_loss, "total",
           v->total, v->total_scale);
}

static int cmp_rel_desc(const void *a, const void *b)
{
    const double x = ((const mf_train_check_item *)a)->result.rel,
                 y = ((const mf_train_check_item *)b)->result.rel;
    return x < y ? 1 : x > y ? -1 : 0;
}

static void print_item(const mf_train_check_item *it)
{
    const mf_compare_result *c = &it->result;
    printf("check %-72s %.3e (tol %.0e) %s\n", it->name, c->rel, c->tol,
           c->pass ? "ok" : (c->nan ? "FAIL (NaN)" : "FAIL"));
}

static mf_status report_check(const options *o, mf_train_check_report *r)
{
    int n_grads = 0;
    for (int i = 0; i < r->count; i++) {
        const bool grad = !strncmp(r->items[i].name, "grads/", 6);
        n_grads += grad;
        if (o->verbose || !grad || !r->items[i].result.pass) print_item(&r->items[i]);
    }
    if (!o->verbose && n_grads > 0) {
        mf_train_check_item *g = malloc(sizeof *g * (size_t)n_grads);
        if (g) {
            int k = 0;
            for (int i = 0; i < r->count; i++)
                if (!strncmp(r->items[i].name, "grads/", 6)) g[k++] = r->items[i];
            qsort(g, (size_t)n_grads, sizeof *g, cmp_rel_desc);
            printf("largest gradient errors:\n");
            for (int i = 0; i < n_grads && i < 10; i++) print_item(&g[i]);
            free(g);
        }
    }
    printf("check: %d datasets of %s compared (%d gradients), %d failed; worst max|a-ref|/max|ref|:"
           " loss %.3e, gradients %.3e, train outputs %.3e\n",
           r->count, o->check, n_grads, r->failed, r->worst_loss, r->worst_grad, r->worst_output);
    if (r->failed)
        return MF_ERROR(MF_ERR_NUMERIC, "--check %s: %d of %d datasets differ", o->check, r->failed,
                        r->count);
    return MF_OK;
}

static mf_status run(const options *o, mf_ctx *ctx, mf_ctx *gpu)
{
    mf_processed_features f;
    mf_param_store store;
    mf_grad_buffer gb;
    mf_processed_init(&f);
    mf_param_store_init(&store);
    memset(&gb, 0, sizeof gb);
    mf_alphafold_model *m = calloc(1, sizeof *m), *g = calloc(1, sizeof *g);
    /* the GPU's parameters and trunk gradients (--device cuda) */
    mf_train_trunk *tr = gpu ? calloc(1, sizeof *tr) : NULL;
    float *host = NULL;
    mf_train_check_report rep = {0};
    mf_status st = MF_OK;
    if (!m || !g || (gpu && !tr)) {
        st = MF_ERROR(MF_ERR_NOMEM, "model");
        goto cleanup;
    }
    st = mf_processed_read(o->features, &f);
    if (st != MF_OK) {
        mf_error_context(st, "--features %s", o->features);
        goto cleanup;
    }
    if (o->random_init) {
        mf_config c0;
        st = mf_config_load(o->config, &c0);
        if (st == MF_OK && o->structure_layers > 0)
            c0.structure_module.num_layers = o->structure_layers;
        if (st == MF_OK) st = mf_alphafold_random_params(&c0, o->init_seed, &store);
        if (st != MF_OK) {
            mf_error_context(st, "--random-init %llu --config %s", (unsigned long long)o->init_seed,
                             o->config);
            goto cleanup;
        }
    } else {
        st = mf_param_store_load(&store, o->params, NULL);
        if (st != MF_OK) {
            mf_error_context(st, "--params %s", o->params);
            goto cleanup;
        }
    }
    mf_config cfg;
    MF_TRY_GOTO(make_config(o, &store, &cfg));
    st = mf_alphafold_bind(m, &cfg, &store);
    if (st != MF_OK) {
        mf_error_context(st, "%s", o->params ? o->params : "random parameters");
        goto cleanup;
    }
    MF_TRY_GOTO(mf_grad_buffer_init(&gb, &store, NULL));
    MF_TRY_GOTO(mf_alphafold_bind(g, &cfg, &gb.views));
    /* the trunk's parameters and (zeroed) gradients on the GPU */
    if (gpu) MF_TRY_GOTO(mf_train_trunk_init(tr, gpu->arena, &cfg, &store, &gb.views));

    const int64_t N = f.num_res > 0 ? f.num_res : 0, L = cfg.structure_module.num_layers;
    const mf_feature *aa = mf_processed_find(&f, "aatype");
    const int64_t n_res = aa && aa->array.ndim == 1 ? aa->array.shape[0] : N;
    const int64_t sizes[3] = {n_res * 37 * 3, L * n_res * 7, L * n_res * 14 * 3};
    host = malloc(sizeof(float) * (size_t)(sizes[0] + sizes[1] + sizes[2] + 1));
    if (!host) {
        st = MF_ERROR(MF_ERR_NOMEM, "train outputs");
        goto cleanup;
    }
    mf_train_step_outputs outs = {
        .final_atom_positions = mf_tensor_f32(host, 3, n_res, 37, 3),
        .frames = mf_tensor_f32(host + sizes[0], 3, L, n_res, 7),
        .positions = mf_tensor_f32(host + sizes[0] + sizes[1], 4, L, n_res, 14, 3),
    };
    mf_train_step_options opt = mf_train_step_default_options();
    opt.num_iterations = o->recycles >= 0 ? o->recycles + 1 : 0;
    opt.dropout = o->dropout;
    opt.dropout_seed = o->dropout_seed;
    ctx->policy = o->policy;
    if (gpu) {
        gpu->policy = o->policy;
        /* offloaded checkpoints go to the host context's arena */
        if (o->policy.offload) gpu->host_arena = ctx->arena;
        opt.trunk_ctx = gpu;
        opt.trunk_model = &tr->model;
        opt.trunk_grads = &tr->grad_model;
    }
    if (o->chunk_auto) {
        /* the memory model's per-module chunks for this sample within --mem-budget */
        mf_memplan_shape sh = mf_memplan_shape_of_features(&cfg, &f, true, opt.num_iterations);
        sh.dropout = o->dropout;
        const size_t budget = mf_cli_gib_bytes(o->mem_budget);
        MF_TRY_GOTO(mf_memplan_auto_chunk(ctx, &cfg, &ctx->policy, gpu ? MF_DEV_CUDA : MF_DEV_CPU,
                                          &sh, budget, stdout));
        if (gpu) gpu->policy = ctx->policy;
    }
    mf_train_step_result res;
    char pol[160];
    printf("train-step: %s, %s, %lld residues, policy %s%s%s\n", o->features,
           o->params ? o->params : "random parameters", (long long)n_res,
           mf_policy_describe(&ctx->policy, pol, sizeof pol), o->dropout ? ", dropout on" : "",
           gpu ? ", trunk on the GPU" : "");
    MF_TRY_GOTO(mf_train_step(ctx, m, g, &f, &opt, &res, &outs));
    if (gpu) MF_TRY_GOTO(mf_train_merge_trunk_grads(&tr->grads, &gb.views, ctx->arena));
    print_losses("loss", &res.loss);
    if (res.use_clamped_fape > 0)
        print_losses("loss_unclamped (use_clamped_fape = 0, no gradient)", &res.loss_unclamped);
    const double norm = mf_grad_global_norm(&gb);
    char b1[32];
    printf("iterations %lld (the last trained)  gradient global norm %.6e  parameters %lld in %d "
           "arrays\n",
           (long long)res.num_iterations, norm, (long long)gb.layout.total, gb.layout.count);
    printf("time: recycle %.3f s, forward %.3f s, loss %.3f s, backward %.3f s; arena peak %s\n",
           res.stage_seconds[MF_TRAIN_STAGE_RECYCLE], res.stage_seconds[MF_TRAIN_STAGE_FORWARD],
           res.stage_seconds[MF_TRAIN_STAGE_LOSS], res.stage_seconds[MF_TRAIN_STAGE_BACKWARD],
           mf_format_bytes(res.arena_peak, b1, sizeof b1));
    if (gpu)
        printf("GPU arena peak %s (activations; parameters and trunk gradients %s apart)\n",
               mf_format_bytes(res.trunk_arena_peak, b1, sizeof b1),
               mf_format_bytes((size_t)(2 * gb.layout.total) * sizeof(float), b1 + 16, 16));
    if (o->memory_table) mf_arena_print_table(ctx->arena, stdout);
    if (!isfinite(norm)) {
        st = MF_ERROR(MF_ERR_NUMERIC, "the gradient is not finite (global norm %g)", norm);
        goto cleanup;
    }
    if (o->dump) {
        MF_TRY_GOTO(mf_train_step_dump_write(o->dump, &res, &gb.views, &outs));
        printf("wrote %s\n", o->dump);
    }
    if (o->check) {
        MF_TRY_GOTO(mf_train_step_check(o->check, &res, &gb.views, &outs, &rep));
        MF_TRY_GOTO(report_check(o, &rep));
    }
cleanup:
    mf_train_check_report_free(&rep);
    free(host);
    mf_train_trunk_free(tr);
    free(tr);
    mf_grad_buffer_free(&gb);
    mf_param_store_free(&store);
    mf_processed_free(&f);
    free(m);
    free(g);
    return st;
}

int mf_cmd_train_step(int argc, char **argv)
{
    options o;
    int rc = parse_args(argc, argv, &o);
    if (rc < 0) return 0;
    if (rc > 0) return rc;
    const size_t cap = o.arena_gib > 0 ? mf_cli_gib_bytes(o.arena_gib) : mf_cli_physical_memory();
    mf_arena arena;
    if (mf_arena_init(&arena, MF_DEV_CPU, cap, "activations") != MF_OK)
        return mf_report_error("train-step");
    mf_ctx ctx;
    if (mf_ctx_init(&ctx, MF_DEV_CPU, &arena) != MF_OK) {
        mf_arena_destroy(&arena);
        return mf_report_error("train-step");
    }
    mf_arena garena;
    mf_ctx gctx;
    if (o.cuda && mf_cli_gpu_context(o.gpu_arena_gib, &o.policy, &garena, &gctx) != MF_OK) {
        mf_ctx_destroy(&ctx);
        mf_arena_destroy(&arena);
        return mf_report_error("train-step");
    }
    mf_status st = run(&o, &ctx, o.cuda ? &gctx : NULL);
    if (o.cuda) {
        mf_ctx_destroy(&gctx);
        mf_arena_destroy(&garena);
    }
    mf_ctx_destroy(&ctx);
    mf_arena_destroy(&arena);
    if (st != MF_OK) return mf_report_error("train-step");
    return 0;
}
