/* memfold memplan: the memory model's prediction for a configuration, sequence length and
 * policy, its breakdown, and the largest N_res within a budget (model/memplan_model.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "apps/cli.h"
#include "apps/commands.h"
#include "model/memplan_model.h"

static void memplan_usage(FILE *f)
{
    fprintf(
        f,
        "usage: memfold memplan --config C --nres N [--set K=V ...] [--mode infer|train]\n"
        "                       [--nseq S] [--nextra E] [--ntempl T] [--recycles R]\n"
        "                       [--iterations I] [--all-heads] [--dropout on|off]\n"
        "                       [--chunk N|off|auto] [--chunk.<module> N|off]\n"
        "                       [--recompute off|block|every:K] [--storage f32|bf16]\n"
        "                       [--compute f32|bf16] [--offload on|off] [--inplace on|off]\n"
        "                       [--device cpu|cuda] [--budget GiB] [--max-nres LIMIT] [--json]\n"
        "\n"
        "Predicts the peak memory of one run without running it: the activation arena's\n"
        "high-water mark (a replay of the run's allocations as sizes; what `memfold predict` and\n"
        "`memfold train-step` measure as \"arena peak\"), its composition at the peak, the\n"
        "model state (parameters; for training also gradients, Adam moments and the EMA\n"
        "copy), one example's input features, and on CUDA cuBLAS's workspace.\n"
        "  --config C        preset or JSON file (memfold config list)\n"
        "  --mode M          infer (mf_alphafold_inference, as memfold predict) or train (one\n"
        "                    training step, as memfold train-step); default infer\n"
        "  --nseq, --nextra, --ntempl   MSA clusters, extra MSA rows, templates (default:\n"
        "                    the config's data.max_msa_clusters, data.max_extra_msa,\n"
        "                    data.max_templates; templates 0 when template.enabled is false)\n"
        "  --recycles R      inference: R + 1 iterations (default: recycling.num_recycle)\n"
        "  --iterations I    training: iterations of the step, the last one trained (default 1)\n"
        "  --dropout on|off  training: AF2's dropout as memfold train runs it (default on);\n"
        "                    memfold train-step runs without (its --dropout-seed turns it on)\n"
        "  --all-heads       inference: distogram, masked-MSA and experimentally-resolved logits\n"
        "  policy flags      as memfold predict/train-step (--chunk off by default, inplace on at\n"
        "                    inference as predict); --chunk.<module> N sets one module's chunk\n"
        "                    (msa_row_attention, msa_column_attention, "
        "msa_column_global_attention,\n"
        "                    msa_transition, outer_product_mean, triangle_multiplication,\n"
        "                    triangle_attention_starting_node, triangle_attention_ending_node,\n"
        "                    pair_transition)\n"
        "  --chunk auto      with --budget: per module, the largest chunk that keeps the\n"
        "                    predicted total within the budget (prints the choice)\n"
        "  --device cuda     the run `--device cuda` makes: the trunk (embedders, stacks,\n"
        "                    Evoformer) on the GPU, the structure module, heads, losses on\n"
        "                    the host; peak and total are the GPU's (its arena, the parameters'\n"
        "                    mirror, cuBLAS), the host's printed beside them (JSON\n"
        "                    host_peak_bytes, host_total_bytes); the budget is the GPU's\n"
        "  --budget GiB      also print the largest N_res whose predicted total fits\n"
        "  --max-nres L      search limit for that (default 100000)\n"
        "  --json            one JSON object on stdout: peak_bytes (the arena peak),\n"
        "                    total_bytes, state_bytes, param_bytes, feature_bytes, fixed_bytes,\n"
        "                    at_peak {kind: bytes}, policy, shape, and max_nres with --budget\n");
}

typedef struct {
    const char *config;
    const char **sets;
    int nsets;
    bool training, json, chunk_auto, all_heads;
    int dropout; /* -1: default (on in training) */
    int64_t n_res, n_seq, n_extra, n_templ, recycles, iterations, limit;
    double budget_gib;
    mf_policy policy;
    mf_device device;
} options;

static int usage_error(const char *fmt, const char *v)
{
    fprintf(stderr, "memfold memplan: ");
    fprintf(stderr, fmt, v);
    fprintf(stderr, "\n\n");
    memplan_usage(stderr);
    return 2;
}

/* 0 parsed, -1 help printed, else a usage exit code. */
static int parse_args(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    o->n_res = o->n_seq = o->n_extra = o->n_templ = o->recycles = o->iterations = -1;
    o->limit = 100000;
    o->dropout = -1;
    o->policy = mf_policy_default();
    o->policy.inplace = true;
    o->device = MF_DEV_CPU;
    o->sets = calloc((size_t)argc, sizeof *o->sets);
    if (!o->sets) return usage_error("%s", "out of memory");
    bool inplace_given = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            memplan_usage(stdout);
            return -1;
        }
        if (!strcmp(a, "--json")) {
            o->json = true;
            continue;
        }
        if (!strcmp(a, "--all-heads")) {
            o->all_heads = true;
            continue;
        }
        if (i + 1 >= argc) return usage_error("%s needs a value", a);
        const char *v = argv[++i];
        if (!strcmp(a, "--config")) {
            o->config = v;
        } else if (!strcmp(a, "--set")) {
            o->sets[o->nsets++] = v;
        } else if (!strcmp(a, "--mode")) {
            if (strcmp(v, "infer") && strcmp(v, "train"))
                return usage_error("--mode %s: expected infer or train", v);
            o->training = !strcmp(v, "train");
        } else if (!strcmp(a, "--nres")) {
            if (!mf_cli_parse_i64(v, 1, &o->n_res))
                return usage_error("--nres %s: expected N >= 1", v);
        } else if (!strcmp(a, "--nseq")) {
            if (!mf_cli_parse_i64(v, 1, &o->n_seq))
                return usage_error("--nseq %s: expected S >= 1", v);
        } else if (!strcmp(a, "--nextra")) {
            if (!mf_cli_parse_i64(v, 0, &o->n_extra))
                return usage_error("--nextra %s: expected E >= 0", v);
        } else if (!strcmp(a, "--ntempl")) {
            if (!mf_cli_parse_i64(v, 0, &o->n_templ))
                return usage_error("--ntempl %s: expected T >= 0", v);
        } else if (!strcmp(a, "--recycles")) {
            if (!mf_cli_parse_i64(v, 0, &o->recycles))
                return usage_error("--recycles %s: expected R >= 0", v);
        } else if (!strcmp(a, "--iterations")) {
            if (!mf_cli_parse_i64(v, 1, &o->iterations))
                return usage_error("--iterations %s: expected I >= 1", v);
        } else if (!strcmp(a, "--dropout")) {
            if (strcmp(v, "on") && strcmp(v, "off"))
                return usage_error("--dropout %s: expected on or off", v);
            o->dropout = !strcmp(v, "on");
        } else if (!strcmp(a, "--max-nres")) {
            if (!mf_cli_parse_i64(v, 1, &o->limit))
                return usage_error("--max-nres %s: expected L >= 1", v);
        } else if (!strcmp(a, "--budget")) {
            char *end = NULL;
            o->budget_gib = strtod(v, &end);
            if (*end || !(o->budget_gib > 0))
                return usage_error("--budget %s: expected GiB > 0", v);
        } else if (!strcmp(a, "--device")) {
            if (!strcmp(v, "cpu"))
                o->device = MF_DEV_CPU;
            else if (!strcmp(v, "cuda"))
                o->device = MF_DEV_CUDA;
            else
                return usage_error("--device %s: expected cpu or cuda", v);
        } else if (!strcmp(a, "--chunk") && !strcmp(v, "auto")) {
            o->chunk_auto = true;
        } else if (!strncmp(a, "--", 2) &&
                   (!strcmp(a + 2, "chunk") || !strncmp(a + 2, "chunk.", 6) ||
                    !strcmp(a + 2, "recompute") || !strcmp(a + 2, "storage") ||
                    !strcmp(a + 2, "compute") || !strcmp(a + 2, "offload") ||
                    !strcmp(a + 2, "inplace"))) {
            if (mf_policy_set(&o->policy, a + 2, v) != MF_OK) {
                fprintf(stderr, "memfold memplan: %s\n", mf_last_error());
                return 2;
            }
            inplace_given |= !strcmp(a + 2, "inplace");
        } else {
            return usage_error("unknown argument '%s'", a);
        }
    }
    if (!o->config) return usage_error("%s", "--config is required");
    if (o->n_res < 0) return usage_error("%s", "--nres is required");
    if (o->chunk_auto && !(o->budget_gib > 0))
        return usage_error("%s", "--chunk auto needs --budget GiB");
    if (o->training && !inplace_given) o->policy.inplace = false;
    return 0;
}

static void print_bytes_line(const char *what, size_t bytes, const char *note)
{
    char b[32];
    printf("  %-28s %12s  %s\n", what, mf_format_bytes(bytes, b, sizeof b), note ? note : "");
}

static void print_json(const options *o, const mf_memplan_shape *sh, const mf_memplan_result *r,
                       const char *policy, double budget, int64_t max_nres,
                       const mf_memplan_result *at_max)
{
    printf("{\"peak_bytes\": %zu, \"total_bytes\": %zu, \"state_bytes\": %zu, "
           "\"param_bytes\": %zu, \"num_params\": %lld, \"feature_bytes\": %zu, "
           "\"fixed_bytes\": %zu, ",
           r->arena_peak, r->total, r->state_bytes, r->param_bytes, (long long)r->num_params,
           r->feature_bytes, r->fixed_bytes);
    if (o->device == MF_DEV_CUDA)
        printf("\"host_peak_bytes\": %zu, \"host_total_bytes\": %zu, ", r->host_arena_peak,
               r->host_total);
    printf("\"at_peak\": {");
    for (int k = 0; k < MF_MEM_NKINDS; k++)
        printf("%s\"%s\": %zu", k ? ", " : "", mf_mem_kind_name(k), r->kind_at_peak[k]);
    printf("}, \"policy\": \"%s\", \"device\": \"%s\", \"shape\": {\"mode\": \"%s\", "
           "\"n_res\": %lld, \"n_seq\": %lld, \"n_extra\": %lld, \"n_templ\": %lld, "
           "\"iterations\": %lld, \"all_heads\": %s, \"dropout\": %s}",
           policy, o->device == MF_DEV_CUDA ? "cuda" : "cpu", sh->training ? "train" : "infer",
           (long long)sh->n_res, (long long)sh->n_seq, (long long)sh->n_extra,
           (long long)sh->n_templ, (long long)sh->iterations, sh->all_heads ? "true" : "false",
           sh->dropout ? "true" : "false");
    if (budget > 0)
        printf(", \"budget_bytes\": %.0f, \"max_nres\": %lld, \"total_at_max_nres\": %zu", budget,
               (long long)max_nres, max_nres > 0 ? at_max->total : 0);
    printf("}\n");
}

int mf_cmd_memplan(int argc, char **argv)
{
    options o;
    int rc = parse_args(argc, argv, &o);
    if (rc) {
        free(o.sets);
        return rc < 0 ? 0 : rc;
    }
    mf_config cfg;
    mf_arena arena = {0};
    mf_ctx ctx = {0};
    bool ctx_ready = false;
    mf_status st = mf_config_load_with_overrides(o.config, o.sets, o.nsets, &cfg);
    free(o.sets);
    if (st != MF_OK) return mf_report_error("memplan");
    mf_memplan_shape sh = mf_memplan_default_shape(&cfg, o.n_res, o.training);
    if (o.n_seq > 0) sh.n_seq = o.n_seq;
    if (o.n_extra >= 0) sh.n_extra = o.n_extra;
    if (o.n_templ >= 0) sh.n_templ = cfg.template_embedding.enabled ? o.n_templ : 0;
    if (!o.training && o.recycles >= 0) sh.iterations = o.recycles + 1;
    if (o.training && o.iterations > 0) sh.iterations = o.iterations;
    sh.all_heads = o.all_heads || o.training;
    if (o.dropout >= 0) sh.dropout = o.dropout && o.training;
    /* a CPU context answers the host's matrix-product workspace queries (oneDNN's scratchpad);
     * its arena is never used */
    {
        st = mf_arena_init(&arena, MF_DEV_CPU, MF_ARENA_ALIGN, "memplan queries");
        if (st == MF_OK) st = mf_ctx_init(&ctx, MF_DEV_CPU, &arena);
        if (st != MF_OK) return mf_report_error("memplan");
        ctx_ready = true;
    }
    const double budget = (double)mf_cli_gib_bytes(o.budget_gib);
    mf_memplan_result r, at_max = {0};
    int64_t max_nres = 0;
    char pol[512], b1[32];
    if (o.chunk_auto) {
        st = mf_memplan_auto_chunk(ctx_ready ? &ctx : NULL, &cfg, &o.policy, o.device, &sh,
                                   (size_t)budget, o.json ? NULL : stdout);
        if (st != MF_OK) goto fail;
    }
    st = mf_memplan_evaluate(ctx_ready ? &ctx : NULL, &cfg, &o.policy, o.device, &sh, &r);
    if (st != MF_OK) goto fail;
    mf_policy_describe(&o.policy, pol, sizeof pol);
    if (budget > 0) {
        st = mf_memplan_max_nres(ctx_ready ? &ctx : NULL, &cfg, &o.policy, o.device, &sh,
                                 (size_t)budget, o.limit, &max_nres, &at_max);
        if (st != MF_OK) goto fail;
    }
    if (o.json) {
        print_json(&o, &sh, &r, pol, budget, max_nres, &at_max);
    } else {
        printf("memfold memplan: %s, %s on %s, N_res %lld, N_seq %lld, N_extra %lld, templates "
               "%lld, %lld iteration(s)%s\n",
               cfg.preset[0] ? cfg.preset : o.config,
               sh.training ? "one training step" : "inference",
               o.device == MF_DEV_CUDA ? "cuda" : "cpu", (long long)sh.n_res, (long long)sh.n_seq,
               (long long)sh.n_extra, (long long)sh.n_templ, (long long)sh.iterations,
               sh.all_heads && !sh.training ? ", all heads" : "");
        printf("policy: %s\n", pol);
        print_bytes_line("activation arena peak", r.arena_peak, "(predicted high-water mark)");
        for (int k = 0; k < MF_MEM_NKINDS; k++)
            if (r.kind_at_peak[k]) {
                char what[48];
                snprintf(what, sizeof what, "  %s", mf_mem_kind_name(k));
                print_bytes_line(what, r.kind_at_peak[k], "at the peak");
            }
        char note[96];
        snprintf(note, sizeof note, "(%lld parameters%s)", (long long)r.num_params,
                 sh.training ? " x5: + gradients, Adam m and v, EMA" : "");
        print_bytes_line("model state", r.state_bytes, note);
        print_bytes_line("input features", r.feature_bytes, "(host arrays of one example)");
        if (r.fixed_bytes) print_bytes_line("cuBLAS workspace", r.fixed_bytes, NULL);
        if (o.device == MF_DEV_CUDA) {
            /* --device cuda: the trunk on the GPU, the rest on the host */
            print_bytes_line("GPU total", r.total,
                             sh.training ? "(arena, parameters and trunk gradients, cuBLAS)"
                                         : "(arena, parameters, cuBLAS)");
            print_bytes_line("host arena peak", r.host_arena_peak,
                             "(outputs, structure module, heads, losses; offloaded checkpoints)");
            print_bytes_line("host total", r.host_total, "(host arena, model state, features)");
            printf("note: the GPU side is the trunk's replay with CUDA's bf16 operand copies, the "
                   "attention kernels' scratch and cuBLAS's workspace; the split itself is checked "
                   "exactly with a second CPU context as the trunk, the CUDA kernels' scratch not "
                   "yet on a GPU\n");
        } else {
            print_bytes_line("total", r.total, NULL);
        }
        if (budget > 0) {
            if (max_nres > 0)
                printf("largest N_res within %s: %lld (predicted total %s)\n",
                       mf_format_bytes((size_t)budget, b1, sizeof b1), (long long)max_nres,
                       mf_format_bytes(at_max.total, pol, sizeof pol));
            else
                printf("largest N_res within %s: none (one residue does not fit)\n",
                       mf_format_bytes((size_t)budget, b1, sizeof b1));
        }
    }
    if (ctx_ready) {
        mf_ctx_destroy(&ctx);
        mf_arena_destroy(&arena);
    }
    return 0;
fail:
    if (ctx_ready) {
        mf_ctx_destroy(&ctx);
        mf_arena_destroy(&arena);
    }
    return mf_report_error("memplan");
}
