/* memfold predict: AlphaFold 2 inference from processed features (or a FASTA query) with one or
 * more parameter sets; writes PDB + mmCIF (pLDDT in the B-factors) and a JSON record per model,
 * a ranking, optionally an expected_outputs.h5-layout dump, and a summary on stdout. */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "apps/cli.h"
#include "apps/commands.h"
#include "model/memplan_model.h"
#include "core/ops.h"
#include "data/fasta.h"
#include "data/pipeline.h"
#include "data/processed.h"
#include "model/alphafold.h"
#include "model/prediction_json.h"
#include "model/verify_model.h"
#include "protein/mmcif_writer.h"
#include "protein/pdb_writer.h"
#include "protein/residue_constants.h"

#define MAX_MODELS 16
#define STR_(x)    #x
#define STR(x)     STR_(x)

static void predict_usage(FILE *f)
{
    fprintf(
        f,
        "usage: memfold predict (--features FILE.h5 | --fasta X.fasta [--msa X.a3m ...])\n"
        "                       (--params P [--params P2 ...] | --random-init SEED --config C)\n"
        "                       [--template-hits X.hhr --template-mmcif-dir DIR\n"
        "                        [--max-template-date YYYY-MM-DD] [--max-templates N]]\n"
        "                       [--config C] [--structure-layers N] [--recycles N] [--chunk "
        "N|auto]\n"
        "                       [--mem-budget G]\n"
        "                       [--recycle-early-stop TOL]\n"
        "                       [--storage f32|bf16] [--compute f32|bf16] [--inplace on|off]\n"
        "                       [--dump OUT.h5 [--dump-intermediates]] [--check REF.h5]\n"
        "                       [--name NAME] [--seed S] [--arena-gib G] [--memory-table]\n"
        "                       [--device cpu|cuda [--gpu-arena-gib G]] -o OUTDIR\n"
        "\n"
        "AlphaFold 2 monomer inference. Writes OUTDIR/<model>.pdb and .cif (per-residue\n"
        "pLDDT as B-factors), OUTDIR/<model>.json (pLDDT, mean, PAE and pTM with a pTM head,\n"
        "timings per stage, arena peak, process peak RSS) and OUTDIR/ranking.json.\n"
        "  --features FILE.h5   processed features (data/processed.h); by default one recycling\n"
        "                       iteration per slice of the file's recycling axis\n"
        "  --fasta, --msa       one query sequence and its alignments (a3m, Stockholm; none:\n"
        "                       single sequence) through the inference pipeline; the MSA is\n"
        "                       resampled per iteration from --seed S (default 0)\n"
        "  --template-hits X.hhr HHsearch/HHblits hits of the --fasta query, featurized as\n"
        "                       `memfold featurize` does from the mmCIF files of\n"
        "                       --template-mmcif-dir DIR (<pdb id>.cif[.gz]); hits released after\n"
        "                       --max-template-date are dropped; the first --max-templates N\n"
        "                       (default: the config's data.max_templates, AF2: 4) are used\n"
        "  --params P           .npz (official AF2 layout) or memfold HDF5 parameters; repeat\n"
        "                       to run several models, ranked by mean pLDDT (pTM when present).\n"
        "                       The model is named after the file (basename without extension)\n"
        "  --random-init SEED   AF2's initialisers instead of a parameter file (needs --config)\n"
        "  --config C           preset or JSON file (default: inferred from the parameter shapes)\n"
        "  --structure-layers N structure-module layers (no parameter records it; AF2: 8)\n"
        "  --recycles N         AF2 num_recycle: N+1 iterations (with --features, slice r mod R\n"
        "                       of the per-iteration features)\n"
        "  --recycle-early-stop TOL  stop recycling once the RMS change of the Calpha-Calpha\n"
        "                       distance matrix (pairs of real residues) against the previous\n"
        "                       iteration is below TOL Angstrom (AF2 v2.3's\n"
        "                       recycle_early_stop_tolerance); compared from the second\n"
        "                       iteration on, so at least 2 run (default: off, all run)\n"
        "  --chunk N            rows per slice in attention/transitions (0 = off)\n"
        "  --chunk auto --mem-budget G   per module, the largest chunk that keeps the memory\n"
        "                       model's predicted total (activation arena peak, parameters,\n"
        "                       features; memfold memplan) within G GiB; prints the choice\n"
        "  --storage f32|bf16   precision of saved activations: these exist only in training,\n"
        "                       so at inference --storage bf16 has no effect yet (a note says so)\n"
        "  --compute f32|bf16   precision of matrix-product inputs\n"
        "  --inplace on|off     residual updates accumulated in place (default on)\n"
        "  --dump OUT.h5        final outputs with the names and shapes of expected_outputs.h5;\n"
        "                       --dump-intermediates adds intermediates/<stage>/<tensor>\n"
        "  --check REF.h5       compare every dataset of REF.h5 with this run (the dump when\n"
        "                       given), max|a-ref|/max|ref| <= each dataset's rtol (1e-4)\n"
        "  --name NAME          model name (one model)\n"
        "  --arena-gib G        activation arena reservation (default: physical memory)\n"
        "  --device cuda        the trunk (embedders, template and extra-MSA stacks, Evoformer)\n"
        "                       on the GPU, the structure module and heads on the host; the\n"
        "                       JSON adds the GPU arena's peak (default: cpu, everything here)\n"
        "  --gpu-arena-gib G    GPU arena reservation (default: 90%% of the free GPU memory)\n"
        "  --memory-table       print the arena's bytes per label (peak, at the high-water "
        "mark)\n");
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "memfold predict: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    predict_usage(stderr);
    return 2;
}

/* "path/to/params_model_1.npz" -> "params_model_1". */
static void model_name_from_path(const char *path, char *out, size_t cap)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    snprintf(out, cap, "%s", base);
    char *dot = strrchr(out, '.');
    if (dot && dot != out) *dot = '\0';
}

static mf_status make_dir(const char *path)
{
    if (mkdir(path, 0777) == 0 || errno == EEXIST) {
        struct stat sb;
        if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) return MF_OK;
    }
    return MF_ERROR(MF_ERR_IO, "cannot create output directory %s: %s", path, strerror(errno));
}

/* What one model's run leaves for writing and ranking (host copies). */
typedef struct {
    char name[256];
    int64_t N, num_recycles, num_templates;
    double recycle_change; /* -1: not computed */
    float *positions, *atom_mask, *plddt, *pae;
    double max_pae, ptm;
    bool has_ptm;
    mf_stage_timing timings[MF_ALPHAFOLD_NUM_STAGES + 3];
    int n_timings;
    int64_t arena_peak, gpu_arena_peak;
    mf_config cfg;
} model_result;

static void result_free(model_result *r)
{
    free(r->positions);
    free(r->atom_mask);
    free(r->plddt);
    free(r->pae);
    memset(r, 0, sizeof *r);
}

static float *host_copy(const mf_tensor *t)
{
    const size_t bytes = mf_tensor_bytes(t);
    float *p = malloc(bytes ? bytes : 1);
    if (p && bytes) memcpy(p, t->data, bytes);
    return p;
}

typedef struct {
    const char *features, *fasta, *config, *dump, *check, *out_dir, *name;
    const char *template_hits, *template_mmcif_dir, *max_template_date;
    int64_t max_templates; /* -1: the config's data.max_templates */
    double recycle_early_stop;
    const char *params[MAX_MODELS];
    const char *msas[MAX_MODELS];
    int n_params, n_msas;
    bool random_init, dump_intermediates, memory_table, verbose;
    uint64_t seed, data_seed;
    int64_t structure_layers, recycles, chunk;
    mf_policy policy;
    double arena_gib, gpu_arena_gib;
    bool cuda;         /* --device cuda: the trunk on the GPU */
    bool chunk_auto;   /* --chunk auto: per-module chunks from the memory model */
    double mem_budget; /* --mem-budget GiB for it */
} options;

/* --verbose: one line per stage and per Evoformer block on stderr. */
static void print_progress(void *data, const char *stage, int64_t iteration, int64_t block,
                           int64_t num_blocks, double seconds)
{
    const char *model = data;
    if (block >= 0)
        fprintf(stderr, "%s: iteration %lld %s block %lld/%lld done at %.1f s\n", model,
                (long long)iteration, stage, (long long)block + 1, (long long)num_blocks, seconds);
    else
        fprintf(stderr, "%s: iteration %lld %s done at %.1f s\n", model, (long long)iteration,
                stage, seconds);
}

/* Loads (or draws) model k's parameters and configuration, runs it, fills r. */
/* --chunk auto: the memory model's per-module chunks for this input within --mem-budget. */
static mf_status auto_chunk(const options *o, mf_ctx *ctx, const mf_config *cfg,
                            const mf_processed_features *f, const mf_alphafold_options *opt)
{
    mf_memplan_shape sh = mf_memplan_shape_of_features(cfg, f, false, opt->num_iterations);
    sh.all_heads = opt->all_heads;
    const size_t budget = mf_cli_gib_bytes(o->mem_budget);
    /* with --device cuda the budget is the GPU's (the trunk's arena, the parameters' mirror) */
    return mf_memplan_auto_chunk(ctx, cfg, &ctx->policy, o->cuda ? MF_DEV_CUDA : MF_DEV_CPU, &sh,
                                 budget, stdout);
}

static mf_status run_model(const options *o, int k, mf_ctx *ctx, mf_ctx *gpu,
                           const mf_processed_features *f, mf_param_store *preloaded,
                           model_result *r)
{
    mf_param_store gstore; /* the GPU's mirror of the parameters (--device cuda) */
    mf_param_store_init(&gstore);
    mf_alphafold_model *gm = NULL;
    mf_arena_mark_t gmark = gpu ? mf_arena_mark(gpu->arena) : (mf_arena_mark_t){0, 0};
    const double t_start = now_seconds();
    mf_param_store store;
    mf_param_store_init(&store);
    if (preloaded) {
        store = *preloaded; /* taken over */
        mf_param_store_init(preloaded);
    }
    mf_alphafold_model *m = malloc(sizeof *m);
    mf_alphafold_recorder rec = {0};
    mf_status st = MF_OK;
    if (!m) return MF_ERROR(MF_ERR_NOMEM, "model");
    if (o->random_init) {
        MF_TRY_GOTO(mf_config_load(o->config, &r->cfg));
        if (o->structure_layers > 0) r->cfg.structure_module.num_layers = o->structure_layers;
        MF_TRY_GOTO(mf_config_validate(&r->cfg, o->config));
        MF_TRY_GOTO(mf_alphafold_random_params(&r->cfg, o->seed, &store));
        snprintf(r->name, sizeof r->name, "%s", o->name ? o->name : "random");
    } else {
        if (store.count == 0) st = mf_param_store_load(&store, o->params[k], NULL);
        if (st != MF_OK) {
            mf_error_context(st, "--params %s", o->params[k]);
            goto cleanup;
        }
        st = mf_alphafold_config_for_params(&store, o->config, o->structure_layers, &r->cfg);
        if (st != MF_OK) {
            mf_error_context(st, "--params %s", o->params[k]);
            goto cleanup;
        }
        if (o->name)
            snprintf(r->name, sizeof r->name, "%s", o->name);
        else
            model_name_from_path(o->params[k], r->name, sizeof r->name);
    }
    st = mf_alphafold_bind(m, &r->cfg, &store);
    if (st != MF_OK) {
        mf_error_context(st, "%s", o->random_init ? "random parameters" : o->params[k]);
        goto cleanup;
    }
    if (gpu) {
        gm = malloc(sizeof *gm);
        if (!gm) {
            st = MF_ERROR(MF_ERR_NOMEM, "GPU model");
            goto cleanup;
        }
        st = mf_param_store_mirror(&store, gpu->arena, &gstore);
        if (st == MF_OK) st = mf_alphafold_bind(gm, &r->cfg, &gstore);
        if (st != MF_OK) {
            mf_error_context(st, "parameters on the GPU");
            goto cleanup;
        }
    }
    const double t_loaded = now_seconds();

    mf_alphafold_options opt = {
        .trunk_ctx = gpu,
        .trunk_model = gm,
        .num_iterations = o->recycles >= 0 ? o->recycles + 1 : 0,
        .all_heads = o->dump != NULL || o->check != NULL,
        .progress = o->verbose ? print_progress : NULL,
        .progress_data = r->name,
        .recycle_early_stop_tolerance = o->recycle_early_stop,
    };
    if (o->dump_intermediates) {
        const mf_feature *ta = mf_processed_find(f, "template_aatype");
        const int64_t iters = opt.num_iterations > 0 ? opt.num_iterations : f->num_iterations;
        mf_alphafold_recorder_init(&rec, iters, ta && ta->array.ndim >= 1 ? ta->array.shape[0] : 0);
        opt.hook = mf_alphafold_recorder_hook;
        opt.hook_data = &rec;
    }
    if (o->chunk_auto) {
        MF_TRY_GOTO(auto_chunk(o, ctx, &r->cfg, f, &opt));
        if (gpu) gpu->policy = ctx->policy;
    }
    mf_alphafold_outputs out;
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_arena_reset_peak(ctx->arena);
    const size_t base = mf_arena_used(ctx->arena);
    size_t gbase = 0;
    if (gpu) {
        mf_arena_reset_peak(gpu->arena);
        gbase = mf_arena_used(gpu->arena);
    }
    st = mf_alphafold_inference(ctx, m, f, &opt, &out);
    const double t_inferred = now_seconds();
    if (st == MF_OK) {
        r->N = out.num_res;
        r->num_recycles = out.num_iterations - 1;
        r->recycle_change = out.recycle_change;
        const mf_feature *ta = mf_processed_find(f, "template_aatype");
        r->num_templates = m->templates && ta && ta->array.ndim >= 1 && ta->array.shape[0] > 0
                               ? ta->array.shape[0]
                               : 0;
        r->arena_peak = (int64_t)(mf_arena_high_water(ctx->arena) - base);
        if (gpu) r->gpu_arena_peak = (int64_t)(mf_arena_high_water(gpu->arena) - gbase);
        r->positions = host_copy(&out.final_atom_positions);
        r->atom_mask = host_copy(&out.final_atom_mask);
        r->plddt = host_copy(&out.plddt);
        if (!r->positions || !r->atom_mask || !r->plddt) st = MF_ERROR(MF_ERR_NOMEM, "outputs");
    }
    if (st == MF_OK && out.pae_logits.data) {
        const int64_t N = out.num_res;
        r->pae = malloc(sizeof(float) * (size_t)(N * N));
        if (!r->pae) st = MF_ERROR(MF_ERR_NOMEM, "PAE [%lld, %lld]", (long long)N, (long long)N);
        mf_tensor pae = mf_tensor_f32(r->pae, 2, N, N);
        const double max_bin = r->cfg.heads.predicted_aligned_error_max_error_bin;
        if (st == MF_OK)
            st = mf_compute_predicted_aligned_error(&pae, &r->max_pae, &out.pae_logits, max_bin);
        if (st == MF_OK)
            st = mf_compute_predicted_tm_score(&r->ptm, &out.pae_logits, NULL, max_bin);
        r->has_ptm = st == MF_OK;
    }
    if (st == MF_OK && o->dump)
        st = mf_alphafold_dump_write(o->dump, &out, o->dump_intermediates ? &rec : NULL);
    if (st == MF_OK && o->check) {
        static mf_verify_report rep;
        rep.count = 0;
        st = o->dump ? mf_verify_dump_file(o->dump, o->check, &rep)
                     : mf_verify_model_outputs(o->check, &out, o->dump_intermediates ? &rec : NULL,
                                               &rep);
        int failed = 0;
        double worst = 0;
        for (int i = 0; st == MF_OK && i < rep.count; i++) {
            const mf_compare_result *c = &rep.items[i].result;
            printf("check %-62s %.3e (tol %.0e) %s\n", rep.items[i].name, c->rel, c->tol,
                   c->pass ? "ok"
                           : (c->n == 0 && !c->nan ? "FAIL (missing or size differs)"
                              : c->nan             ? "FAIL (NaN)"
                                                   : "FAIL"));
            failed += !c->pass;
            if (c->rel > worst) worst = c->rel;
        }
        if (st == MF_OK) {
            printf("check: %d datasets of %s compared, %d failed, worst max|a-ref|/max|ref| "
                   "%.3e\n",
                   rep.count, o->check, failed, worst);
            if (failed || rep.count == 0)
                st = MF_ERROR(MF_ERR_NUMERIC, "--check %s: %d of %d datasets differ", o->check,
                              failed, rep.count);
        }
    }
    mf_arena_release(ctx->arena, mark);
    if (st != MF_OK) goto cleanup;
    /* the record's configuration says what ran */
    r->cfg.memory = ctx->policy;
    r->cfg.recycling.num_recycle = r->num_recycles;
    r->n_timings = 0;
    r->timings[r->n_timings++] = (mf_stage_timing){"load_params", t_loaded - t_start};
    for (int s = 0; s < MF_ALPHAFOLD_NUM_STAGES; s++)
        r->timings[r->n_timings++] =
            (mf_stage_timing){mf_alphafold_stage_name(s), out.stage_seconds[s]};
    r->timings[r->n_timings++] = (mf_stage_timing){"predict", t_inferred - t_loaded};
cleanup:
    mf_alphafold_recorder_free(&rec);
    mf_param_store_free(&gstore);
    if (gpu) mf_arena_release(gpu->arena, gmark);
    free(gm);
    mf_param_store_free(&store);
    free(m);
    return st;
}

/* The protein record of a result (one chain "A", AF2's residue numbering residue_index + 1). */
static mf_status make_protein(const mf_processed_features *f, const model_result *r, mf_protein *p)
{
    mf_tensor aatype, residue_index;
    MF_TRY(mf_processed_tensor(f, "aatype", 0, &aatype));
    MF_TRY(mf_processed_tensor(f, "residue_index", 0, &residue_index));
    MF_TRY(mf_protein_alloc(p, r->N));
    const int32_t *aa = aatype.data, *ri = residue_index.data;
    for (int64_t i = 0; i < r->N; i++) {
        p->aatype[i] = aa[i] >= 0 && aa[i] <= MF_RESTYPE_UNK ? aa[i] : MF_RESTYPE_UNK;
        p->residue_index[i] = ri[i] + 1;
        p->sequence[i] = mf_restype_one_letter(p->aatype[i]);
    }
    memcpy(p->atom_positions, r->positions, sizeof(float) * (size_t)(r->N * 37 * 3));
    memcpy(p->atom_mask, r->atom_mask, sizeof(float) * (size_t)(r->N * 37));
    for (int64_t i = 0; i < r->N; i++)
        for (int a = 0; a < 37; a++) p->b_factors[i * 37 + a] = r->plddt[i];
    snprintf(p->chain_id, sizeof p->chain_id, "A");
    return MF_OK;
}

static mf_status write_outputs(const options *o, const mf_processed_features *f, model_result *res,
                               int n, mf_ranking_metric metric)
{
    mf_prediction_record recs[MAX_MODELS];
    int32_t *numbers = NULL;
    char *sequence = NULL;
    mf_status st = MF_OK;
    mf_tensor residue_index;
    MF_TRY(mf_processed_tensor(f, "residue_index", 0, &residue_index));
    const int64_t N = res[0].N;
    numbers = malloc(sizeof(int32_t) * (size_t)N);
    sequence = malloc((size_t)N + 1);
    if (!numbers || !sequence) {
        st = MF_ERROR(MF_ERR_NOMEM, "outputs");
        goto cleanup;
    }
    {
        mf_tensor aatype;
        MF_TRY_GOTO(mf_processed_tensor(f, "aatype", 0, &aatype));
        for (int64_t i = 0; i < N; i++) {
            numbers[i] = ((const int32_t *)residue_index.data)[i] + 1;
            const int32_t a = ((const int32_t *)aatype.data)[i];
            sequence[i] = mf_restype_one_letter(a >= 0 && a <= MF_RESTYPE_UNK ? a : MF_RESTYPE_UNK);
        }
        sequence[N] = '\0';
    }
    for (int k = 0; k < n; k++) {
        recs[k] = (mf_prediction_record){
            .model_name = res[k].name,
            .num_res = res[k].N,
            .sequence = sequence,
            .residue_number = numbers,
            .plddt = res[k].plddt,
            .pae = res[k].pae,
            .max_pae = res[k].max_pae,
            .ptm = res[k].has_ptm ? &res[k].ptm : NULL,
            .num_recycles = res[k].num_recycles,
            .timings = res[k].timings,
            .n_timings = res[k].n_timings,
            .arena_high_water_bytes = res[k].arena_peak,
            .gpu_arena_high_water_bytes = res[k].gpu_arena_peak,
            .peak_rss_bytes = 0,
            .config = &res[k].cfg,
        };
    }
    int order[MAX_MODELS];
    MF_TRY_GOTO(mf_ranking_order(recs, n, metric, order));
    for (int rank = 0; rank < n; rank++) {
        const int k = order[rank];
        double mean = 0, conf = 0;
        MF_TRY_GOTO(mf_prediction_confidence(&recs[k], metric, &mean, &conf));
        char path[4096];
        mf_protein p = {0};
        MF_TRY_GOTO(make_protein(f, &res[k], &p));
        mf_structure_meta meta = {.model_name = res[k].name,
                                  .rank = rank + 1,
                                  .ranking_metric = mf_ranking_metric_name(metric),
                                  .ranking_confidence = conf};
        const float *pl[1] = {res[k].plddt};
        snprintf(path, sizeof path, "%s/%s.pdb", o->out_dir, res[k].name);
        st = mf_pdb_write(path, &p, 1, pl, &meta);
        if (st == MF_OK) {
            snprintf(path, sizeof path, "%s/%s.cif", o->out_dir, res[k].name);
            st = mf_mmcif_write(path, &p, 1, pl, &meta);
        }
        mf_protein_free(&p);
        if (st != MF_OK) goto cleanup;
        snprintf(path, sizeof path, "%s/%s.json", o->out_dir, res[k].name);
        MF_TRY_GOTO(mf_prediction_json_write(path, &recs[k], metric));
        printf("%-24s rank %d  N %lld  mean pLDDT %6.2f", res[k].name, rank + 1,
               (long long)res[k].N, mean);
        if (res[k].has_ptm) printf("  pTM %.4f", res[k].ptm);
        char b1[32];
        printf("  iterations %lld", (long long)res[k].num_recycles + 1);
        if (res[k].recycle_change >= 0)
            printf(" (last Calpha distance change %.3f A)", res[k].recycle_change);
        printf("  templates %lld  arena peak %s", (long long)res[k].num_templates,
               mf_format_bytes((size_t)res[k].arena_peak, b1, sizeof b1));
        if (res[k].gpu_arena_peak > 0)
            printf("  GPU arena peak %s",
                   mf_format_bytes((size_t)res[k].gpu_arena_peak, b1, sizeof b1));
        printf("  predict %.2f s\n", res[k].timings[res[k].n_timings - 1].seconds);
    }
    {
        char path[4096];
        snprintf(path, sizeof path, "%s/ranking.json", o->out_dir);
        MF_TRY_GOTO(mf_ranking_json_write(path, recs, n, metric));
    }
cleanup:
    free(numbers);
    free(sequence);
    return st;
}

static int parse_args(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    o->structure_layers = 0;
    o->recycles = -1;
    o->chunk = -1;
    o->max_templates = -1;
    o->policy = mf_policy_default();
    o->policy.inplace = true;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            predict_usage(stdout);
            return -1;
        }
        if (!strcmp(a, "--dump-intermediates")) {
            o->dump_intermediates = true;
            continue;
        }
        if (!strcmp(a, "--memory-table")) {
            o->memory_table = true;
            continue;
        }
        if (!strcmp(a, "--verbose")) {
            o->verbose = true;
            continue;
        }
        if (!v) return usage_error("%s needs a value", a);
        i++;
        if (!strcmp(a, "--features")) {
            o->features = v;
        } else if (!strcmp(a, "--fasta")) {
            o->fasta = v;
        } else if (!strcmp(a, "--msa")) {
            if (o->n_msas == MAX_MODELS) return usage_error("too many --msa (%s)", v);
            o->msas[o->n_msas++] = v;
        } else if (!strcmp(a, "--params")) {
            if (o->n_params == MAX_MODELS) return usage_error("too many --params (%s)", v);
            o->params[o->n_params++] = v;
        } else if (!strcmp(a, "--random-init")) {
            int64_t s;
            if (!mf_cli_parse_i64(v, 0, &s))
                return usage_error("--random-init %s: expected a seed", v);
            o->random_init = true;
            o->seed = (uint64_t)s;
        } else if (!strcmp(a, "--seed")) {
            int64_t s;
            if (!mf_cli_parse_i64(v, 0, &s))
                return usage_error("--seed %s: expected an integer >= 0", v);
            o->data_seed = (uint64_t)s;
        } else if (!strcmp(a, "--config")) {
            o->config = v;
        } else if (!strcmp(a, "--structure-layers")) {
            if (!mf_cli_parse_i64(v, 1, &o->structure_layers))
                return usage_error("--structure-layers %s: expected a positive integer", v);
        } else if (!strcmp(a, "--recycles")) {
            if (!mf_cli_parse_i64(v, 0, &o->recycles))
                return usage_error("--recycles %s: expected an integer >= 0", v);
        } else if (!strcmp(a, "--template-hits")) {
            o->template_hits = v;
        } else if (!strcmp(a, "--template-mmcif-dir")) {
            o->template_mmcif_dir = v;
        } else if (!strcmp(a, "--max-template-date")) {
            if (!mf_template_date_valid(v))
                return usage_error("--max-template-date %s: expected YYYY-MM-DD", v);
            o->max_template_date = v;
        } else if (!strcmp(a, "--max-templates")) {
            if (!mf_cli_parse_i64(v, 0, &o->max_templates) ||
                o->max_templates > MF_PIPELINE_MAX_TEMPLATES)
                return usage_error(
                    "--max-templates %s: expected 0 .. " STR(MF_PIPELINE_MAX_TEMPLATES), v);
        } else if (!strcmp(a, "--recycle-early-stop")) {
            char *end;
            o->recycle_early_stop = strtod(v, &end);
            if (*end || !(o->recycle_early_stop > 0))
                return usage_error("--recycle-early-stop %s: expected a tolerance > 0 (Angstrom)",
                                   v);
        } else if (!strcmp(a, "--chunk") && v && !strcmp(v, "auto")) {
            o->chunk_auto = true;
        } else if (!strcmp(a, "--mem-budget")) {
            char *end = NULL;
            o->mem_budget = strtod(v, &end);
            if (*end || !(o->mem_budget > 0))
                return usage_error("--mem-budget %s: expected GiB > 0", v);
        } else if (!strcmp(a, "--chunk")) {
            if (mf_policy_set(&o->policy, "chunk", v) != MF_OK)
                return usage_error("--chunk %s: expected off or a number of rows", v);
        } else if (!strcmp(a, "--storage") || !strcmp(a, "--compute") || !strcmp(a, "--inplace")) {
            if (mf_policy_set(&o->policy, a + 2, v) != MF_OK) {
                fprintf(stderr, "memfold predict: %s\n", mf_last_error());
                return 2;
            }
        } else if (!strcmp(a, "--dump")) {
            o->dump = v;
        } else if (!strcmp(a, "--check")) {
            o->check = v;
        } else if (!strcmp(a, "--name")) {
            o->name = v;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--out")) {
            o->out_dir = v;
        } else if (!strcmp(a, "--device")) {
            if (strcmp(v, "cpu") && strcmp(v, "cuda"))
                return usage_error("--device %s: expected cpu or cuda", v);
            o->cuda = !strcmp(v, "cuda");
        } else if (!strcmp(a, "--gpu-arena-gib")) {
            char *end;
            o->gpu_arena_gib = strtod(v, &end);
            if (*end || !(o->gpu_arena_gib > 0))
                return usage_error("--gpu-arena-gib %s: expected GiB", v);
        } else if (!strcmp(a, "--arena-gib")) {
            char *end;
            o->arena_gib = strtod(v, &end);
            if (*end || !(o->arena_gib > 0)) return usage_error("--arena-gib %s: expected GiB", v);
        } else {
            return usage_error("unknown option '%s'", a);
        }
    }
    if (!o->features == !o->fasta)
        return usage_error("%s", "give exactly one of --features, --fasta");
    if (o->n_msas && !o->fasta) return usage_error("%s", "--msa needs --fasta");
    if ((o->template_hits || o->template_mmcif_dir || o->max_template_date ||
         o->max_templates >= 0) &&
        !o->fasta)
        return usage_error("%s",
                           "--template-* and --max-template* need --fasta (with --features the "
                           "file holds the templates)");
    if (!o->template_hits != !o->template_mmcif_dir)
        return usage_error("%s", "--template-hits and --template-mmcif-dir go together");
    if ((o->max_template_date || o->max_templates >= 0) && !o->template_hits)
        return usage_error("%s", "--max-template-date and --max-templates need --template-hits");
    if (o->recycle_early_stop > 0 && (o->dump_intermediates))
        return usage_error("%s", "--recycle-early-stop and --dump-intermediates do not go together "
                                 "(the intermediates are recorded per planned iteration)");
    if (o->policy.storage == MF_BF16)
        fprintf(stderr,
                "memfold predict: note: --storage bf16 has no effect at inference yet (saved "
                "activations exist only in training)\n");
    if (o->random_init == (o->n_params > 0))
        return usage_error("%s", "give --params (one or more) or --random-init SEED");
    if (o->random_init && !o->config)
        return usage_error("%s", "--random-init needs --config (a preset such as tiny)");
    if (!o->out_dir) return usage_error("%s", "-o OUTDIR is required");
    if (o->chunk_auto != (o->mem_budget > 0))
        return usage_error("%s", "--chunk auto and --mem-budget G go together");
    if (o->gpu_arena_gib > 0 && !o->cuda)
        return usage_error("%s", "--gpu-arena-gib needs --device cuda");
    if (o->dump_intermediates && !o->dump && !o->check)
        return usage_error("%s", "--dump-intermediates needs --dump or --check");
    const int models = o->random_init ? 1 : o->n_params;
    if (models > 1 && (o->dump || o->check || o->name))
        return usage_error("%s", "--dump, --check and --name need a single model");
    return 0;
}

/* Processed features from --fasta (+ --msa) through the inference pipeline, with the first
 * model's configuration (its data settings and num_recycle, or --recycles); *store0 keeps the
 * first parameter file when it had to be read for the configuration. */
static mf_status fasta_features(const options *o, mf_param_store *store0, mf_processed_features *f)
{
    mf_config *cfg = malloc(sizeof *cfg);
    if (!cfg) return MF_ERROR(MF_ERR_NOMEM, "config");
    mf_status st = MF_OK;
    mf_fasta fasta = {0};
    mf_template_features templ = {0};
    if (o->random_init) {
        MF_TRY_GOTO(mf_config_load(o->config, cfg));
    } else if (o->config) {
        MF_TRY_GOTO(mf_config_load(o->config, cfg));
    } else {
        st = mf_param_store_load(store0, o->params[0], NULL);
        if (st == MF_OK) st = mf_alphafold_config_for_params(store0, NULL, 0, cfg);
        if (st != MF_OK) {
            mf_error_context(st, "--params %s", o->params[0]);
            goto cleanup;
        }
    }
    MF_TRY_GOTO(mf_fasta_read(o->fasta, MF_FASTA_UNKNOWN_TO_X, &fasta));
    if (fasta.num_records != 1) {
        st = MF_ERROR(MF_ERR_FORMAT,
                      "--fasta %s: %lld sequences; a monomer prediction takes exactly one",
                      o->fasta, (long long)fasta.num_records);
        goto cleanup;
    }
    mf_pipeline_options po = mf_pipeline_options_inference(cfg);
    po.num_iterations = (o->recycles >= 0 ? o->recycles : cfg->recycling.num_recycle) + 1;
    if (o->max_templates >= 0) po.max_templates = o->max_templates;
    const mf_inference_inputs in = {.msa_paths = o->msas,
                                    .num_msa_paths = o->n_msas,
                                    .template_hits = o->template_hits,
                                    .template_mmcif_dir = o->template_mmcif_dir,
                                    .max_template_date = o->max_template_date};
    st = mf_pipeline_inference_features_ex(&fasta.records[0], &in, &po, o->data_seed, f, &templ);
    if (st != MF_OK) {
        mf_error_context(st, "--fasta %s", o->fasta);
        goto cleanup;
    }
    if (o->template_hits) {
        const int64_t used =
            templ.num_templates < po.max_templates ? templ.num_templates : po.max_templates;
        printf("templates: %d featurized from %s, the first %lld of them in the features "
               "(N_templ %lld):",
               templ.num_templates, o->template_hits, (long long)used, (long long)po.max_templates);
        for (int64_t t = 0; t < used; t++) printf(" %s", templ.domain_names[t]);
        printf("\n");
    }
cleanup:
    mf_template_features_free(&templ);
    mf_fasta_free(&fasta);
    free(cfg);
    return st;
}

int mf_cmd_predict(int argc, char **argv)
{
    options o;
    int rc = parse_args(argc, argv, &o);
    if (rc) return rc < 0 ? 0 : rc;
    const double t0 = now_seconds();
    mf_processed_features f;
    mf_processed_init(&f);
    mf_param_store store0;
    mf_param_store_init(&store0);
    mf_status fst = MF_OK;
    if (o.fasta) {
        fst = fasta_features(&o, &store0, &f);
    } else {
        fst = mf_processed_read(o.features, &f);
        if (fst != MF_OK) mf_error_context(fst, "--features %s", o.features);
    }
    if (fst != MF_OK) {
        mf_param_store_free(&store0);
        mf_processed_free(&f);
        return mf_report_error("predict");
    }
    const double t_features = now_seconds() - t0;
    if (make_dir(o.out_dir) != MF_OK) {
        mf_param_store_free(&store0);
        mf_processed_free(&f);
        return mf_report_error("predict");
    }
    const size_t cap = o.arena_gib > 0 ? mf_cli_gib_bytes(o.arena_gib) : mf_cli_physical_memory();
    mf_arena arena;
    mf_ctx ctx;
    if (mf_arena_init(&arena, MF_DEV_CPU, cap, "activations") != MF_OK) {
        mf_param_store_free(&store0);
        mf_processed_free(&f);
        return mf_report_error("predict");
    }
    if (mf_ctx_init(&ctx, MF_DEV_CPU, &arena) != MF_OK) {
        mf_arena_destroy(&arena);
        mf_param_store_free(&store0);
        mf_processed_free(&f);
        return mf_report_error("predict");
    }
    ctx.policy = o.policy;
    mf_arena garena;
    mf_ctx gctx;
    if (o.cuda && mf_cli_gpu_context(o.gpu_arena_gib, &o.policy, &garena, &gctx) != MF_OK) {
        mf_ctx_destroy(&ctx);
        mf_arena_destroy(&arena);
        mf_param_store_free(&store0);
        mf_processed_free(&f);
        return mf_report_error("predict");
    }
    const int models = o.random_init ? 1 : o.n_params;
    static model_result res[MAX_MODELS];
    mf_status st = MF_OK;
    int done = 0;
    char pol[160];
    printf("memfold predict: %s, %lld residues, %d model(s), policy %s%s\n",
           o.features ? o.features : o.fasta, (long long)f.num_res, models,
           mf_policy_describe(&ctx.policy, pol, sizeof pol), o.cuda ? ", trunk on the GPU" : "");
    for (int k = 0; k < models && st == MF_OK; k++) {
        st = run_model(&o, k, &ctx, o.cuda ? &gctx : NULL, &f,
                       k == 0 && store0.count ? &store0 : NULL, &res[k]);
        if (st == MF_OK) {
            done++;
            /* the features' read time belongs to every model's record */
            mf_stage_timing *t = res[k].timings;
            memmove(t + 1, t, sizeof *t * (size_t)res[k].n_timings);
            t[0] = (mf_stage_timing){"features", t_features};
            res[k].n_timings++;
        }
    }
    mf_ranking_metric metric = MF_RANK_BY_PLDDT;
    if (st == MF_OK) {
        bool all_ptm = done > 0;
        for (int k = 0; k < done; k++) all_ptm = all_ptm && res[k].has_ptm;
        if (all_ptm) metric = MF_RANK_BY_PTM;
        st = write_outputs(&o, &f, res, done, metric);
    }
    int ret = 0;
    if (st != MF_OK)
        ret = mf_report_error("predict");
    else {
        char b1[32];
        if (o.memory_table) mf_arena_print_table(&arena, stdout);
        printf("process peak RSS %s, outputs in %s\n",
               mf_format_bytes((size_t)mf_process_peak_rss_bytes(), b1, sizeof b1), o.out_dir);
    }
    for (int k = 0; k < models; k++) result_free(&res[k]);
    mf_param_store_free(&store0);
    if (o.cuda) {
        mf_ctx_destroy(&gctx);
        mf_arena_destroy(&garena);
    }
    mf_ctx_destroy(&ctx);
    mf_arena_destroy(&arena);
    mf_processed_free(&f);
    return ret;
}
