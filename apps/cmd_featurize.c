/* memfold featurize: structure files (+ MSAs, template hits) -> an AlphaFold 2 feature file, and
 * (--processed) one sample's processed features from a raw feature file (the loader's samples) or
 * from a FASTA query (the inference input). Argument parsing, progress and the closing reports;
 * the work is data/featurize.c, data/loader.c and data/pipeline.c. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "apps/commands.h"
#include "data/fasta.h"
#include "data/featurize.h"
#include "data/loader.h"
#include "data/pipeline.h"
#include "data/processed.h"
#include "model/config.h"

static void featurize_usage(FILE *f)
{
    fprintf(
        f,
        "usage: memfold featurize --structures DIR -o OUT.h5 [options]\n"
        "       memfold featurize --processed OUT.h5 ... (one processed sample; see\n"
        "                         'memfold featurize --processed --help')\n"
        "  Turns every mmCIF and PDB file under DIR (recursively; .cif .mmcif .pdb .ent, each\n"
        "  optionally .gz) into AlphaFold 2 raw features, one HDF5 group <entry>_<chain> per\n"
        "  protein chain (entry = file name without extensions, chain = author chain id, A for\n"
        "  a blank one). The schema is in data/featurize.h; 'memfold inspect' summarizes it.\n"
        "\n"
        "  --structures DIR        structure files (required)\n"
        "  -o, --output OUT.h5     feature file, written under a temporary name and renamed\n"
        "                          when complete: an interrupted run leaves no OUT.h5\n"
        "  --msa-dir DIR           MSAs per chain: DIR/<entry>_<chain>/ (every .a3m/.sto in it\n"
        "                          except uniprot_hits.sto and hmm_output.sto),\n"
        "                          DIR/<entry>_<chain>.a3m|.sto, else DIR/<entry>.a3m|.sto\n"
        "                          (.gz allowed). Several are merged and deduplicated; the\n"
        "                          first row of each must be the chain's sequence. A chain\n"
        "                          without an MSA gets its sequence alone (single-sequence).\n"
        "  --jackhmmer-db FASTA    also search each chain with jackhmmer (Debian package\n"
        "                          'hmmer') against FASTA, as AF2 does for UniRef90 (1\n"
        "                          iteration, E 1e-4, at most 10000 sequences)\n"
        "  --template-hits DIR     HHsearch hits DIR/<entry>_<chain>.hhr or DIR/<entry>.hhr\n"
        "  --template-mmcif-dir D  template structures D/<pdb id>.cif[.gz] (with\n"
        "                          --template-hits)\n"
        "  --max-templates N       templates kept per chain (default %d, AF2's max_hits)\n"
        "  --max-template-date D   drop templates released after D (YYYY-MM-DD); default:\n"
        "                          after the chain's own release date, when known\n"
        "  --max-resolution A      reject chains whose resolution is worse than A Angstrom\n"
        "                          (entries without a resolution, e.g. NMR, pass)\n"
        "  --min-length N          reject chains with fewer than N residues\n"
        "  --max-length N          reject chains with more than N residues\n"
        "  --release-before DATE   reject chains released on or after DATE (YYYY-MM-DD) and\n"
        "                          chains whose file gives no release date\n"
        "  --jobs N                files parsed in parallel (default 1)\n"
        "  --quiet                 no progress line\n"
        "\n"
        "  A file that cannot be parsed, and a chain whose MSA or template hits cannot be\n"
        "  used, is reported with the reason and skipped. Rejected chains are counted by\n"
        "  reason and listed at the end.\n"
        "  Exit status: 0 when at least one chain was written, 1 when none was (then no file\n"
        "  is written) or on an error, 2 for a usage error, 130 when interrupted.\n",
        MF_FEATURIZE_MAX_TEMPLATES);
}

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

typedef struct {
    int tty, quiet;
    int last_decile;
    double last_print;
} progress_state;

static double wall_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void fmt_time(double s, char *out, size_t cap)
{
    if (!(s >= 0) || s > 1e8) {
        snprintf(out, cap, "?");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(out, cap, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(out, cap, "%ld:%02ld", t / 60, t % 60);
}

static void on_progress(const mf_featurize_report *r, void *ud)
{
    progress_state *p = ud;
    if (p->quiet || r->files_total == 0) return;
    int done = r->files_done == r->files_total;
    int decile = (int)(10 * r->files_done / r->files_total);
    double now = wall_seconds();
    if (p->tty) {
        if (!done && r->files_done > 0 && now - p->last_print < 0.2) return;
    } else if (decile == p->last_decile) {
        return;
    }
    p->last_decile = decile;
    p->last_print = now;
    char el[32], eta[32];
    fmt_time(r->seconds, el, sizeof el);
    if (r->files_done > 0)
        fmt_time(r->seconds / (double)r->files_done * (double)(r->files_total - r->files_done), eta,
                 sizeof eta);
    else
        snprintf(eta, sizeof eta, "?");
    fprintf(stderr,
            "%sfeaturize: %lld/%lld files (%d%%), %lld chains written, %lld skipped, %lld failed, "
            "%s elapsed, ETA %s%s",
            p->tty ? "\r" : "", (long long)r->files_done, (long long)r->files_total,
            (int)(100 * r->files_done / r->files_total), (long long)r->chains_written,
            (long long)r->chains_rejected, (long long)(r->files_failed + r->chains_failed), el, eta,
            p->tty ? (done ? "\n" : "\033[K") : "\n");
    fflush(stderr);
}

static int parse_num(const char *flag, const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno || !isfinite(v) || v < 0) {
        fprintf(stderr, "memfold featurize: %s %s: expected a non-negative number\n", flag, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_count(const char *flag, const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno || v < 0) {
        fprintf(stderr, "memfold featurize: %s %s: expected a non-negative integer\n", flag, s);
        return -1;
    }
    *out = v;
    return 0;
}

static void print_report(const mf_featurize_options *o, const mf_featurize_report *r, int ok)
{
    char el[32];
    fmt_time(r->seconds, el, sizeof el);
    if (ok)
        printf("wrote %s: %lld chains from %lld files in %s\n", o->output,
               (long long)r->chains_written, (long long)r->files_total, el);
    printf("files: %lld, unreadable %lld\n", (long long)r->files_total, (long long)r->files_failed);
    printf("chains: %lld written (%lld with an MSA, %lld single-sequence), %lld rejected, %lld "
           "failed\n",
           (long long)r->chains_written, (long long)r->chains_with_msa,
           (long long)(r->chains_written - r->chains_with_msa), (long long)r->chains_rejected,
           (long long)r->chains_failed);
    if (o->template_hits_dir) {
        printf("templates: %lld written for %lld chains (%lld realigned to their mmCIF)\n",
               (long long)r->templates_written, (long long)r->chains_with_templates,
               (long long)r->templates_realigned);
        for (int k = 0; k < MF_TSKIP_COUNT; k++)
            if (r->template_skips[k])
                printf("  hits skipped, %s: %lld\n", mf_template_skip_name((mf_template_skip)k),
                       (long long)r->template_skips[k]);
    }
    if (r->chains_rejected) {
        printf("rejected chains by reason:\n");
        for (int k = 0; k < MF_REJECT_COUNT; k++)
            if (r->rejected_by[k])
                printf("  %-46s %lld\n", mf_reject_reason_name((mf_reject_reason)k),
                       (long long)r->rejected_by[k]);
        printf("rejected chains:\n");
        for (int64_t i = 0; i < r->num_rejected; i++)
            printf("  %s: %s\n", r->rejected[i].what, r->rejected[i].why);
    }
    if (r->num_failed) {
        printf("failed (skipped):\n");
        for (int64_t i = 0; i < r->num_failed; i++)
            printf("  %s: %s\n", r->failed[i].what, r->failed[i].why);
    }
}

/* ---- --processed: one sample of processed features ---- */

#define MAX_PROCESSED_MSAS 64
#define MAX_CONFIG_SETS    64

static void processed_usage(FILE *f)
{
    fprintf(
        f,
        "usage: memfold featurize --processed OUT.h5\n"
        "           (--features RAW.h5 (--chain NAME | --sample K [--epoch E] [--no-shuffle])\n"
        "            | --fasta X.fasta [--msa A.a3m ...] [--template-hits X.hhr\n"
        "              --template-mmcif-dir DIR [--max-template-date D] [--max-templates N]])\n"
        "           [--config C] [--set key=value ...] [--seed S] [--mode train|predict]\n"
        "           [--recycles N]\n"
        "  Writes one sample's processed features (the AlphaFold 2 model inputs, and in train\n"
        "  mode the ground truth) to OUT.h5 in the format of shared/testvectors/features.h5\n"
        "  (data/processed.h): one dataset per feature, per_iteration attributes, the recycling\n"
        "  axis on the MSA features resampled per iteration. 'memfold inspect' and\n"
        "  'memfold predict --features' read it.\n"
        "\n"
        "  From a raw feature file ('memfold featurize -o RAW.h5'):\n"
        "  --features RAW.h5       the raw feature file\n"
        "  --chain NAME            its group NAME (<entry>_<chain>), processed with sample seed S\n"
        "  --sample K              the data loader's sample K (data/loader.h; 0-based, epoch\n"
        "                          after epoch: K = epoch * chains + position) for loader seed\n"
        "                          S and these data settings, read as the loader reads it\n"
        "                          (only the hyperslabs the sample needs)\n"
        "  --epoch E               with --sample: K is the position within epoch E\n"
        "  --no-shuffle            with --sample: chains in file order in every epoch\n"
        "  Mode train (default here): random crop, block deletion, template subsampling, ground\n"
        "  truth, R drawn as in training; predict: the whole chain, the first N_templ templates,\n"
        "  no ground truth.\n"
        "\n"
        "  From a query (the inference input; mode predict only):\n"
        "  --fasta X.fasta         one sequence\n"
        "  --msa FILE              alignment (.a3m, .sto, optionally .gz), repeatable; merged and\n"
        "                          deduplicated after the query; none: single-sequence\n"
        "  --template-hits X.hhr   HHsearch hits of the query: featurized as 'memfold featurize'\n"
        "                          does (the hit's residues mapped to the query, atoms read from\n"
        "                          the template mmCIF), then the first N_templ enter the sample\n"
        "  --template-mmcif-dir D  template structures D/<pdb id>.cif[.gz] (with --template-hits)\n"
        "  --max-template-date D   drop templates released after D (YYYY-MM-DD; default: none)\n"
        "  --max-templates N       hits featurized (default %d, AF2's max_hits)\n"
        "\n"
        "  --config C              preset or JSON file for the data settings (default\n"
        "                          af2-initial): crop, N_seq, N_extra, N_templ, masking, R\n"
        "  --set key=value         override one configuration key (repeatable)\n"
        "  --seed S                sample seed (--chain, --fasta) or loader seed (--sample);\n"
        "                          default 0\n"
        "  --recycles N            R = N + 1 iterations (train mode: the upper end of R's draw)\n"
        "  --quiet                 no summary on stdout\n"
        "  Exit status: 0 written, 1 on an error (nothing is written), 2 for a usage error.\n",
        MF_FEATURIZE_MAX_TEMPLATES);
}

typedef struct {
    const char *out, *features, *chain, *fasta, *hits, *mmcif_dir, *max_date, *config;
    const char *msas[MAX_PROCESSED_MSAS];
    int n_msas;
    const char *sets[MAX_CONFIG_SETS];
    int n_sets;
    int64_t sample, epoch, recycles, max_hits;
    uint64_t seed;
    int mode; /* -1: default for the source, 0 train, 1 predict */
    int no_shuffle, quiet;
} processed_options;

static int processed_usage_error(const char *msg, const char *arg)
{
    fprintf(stderr, "memfold featurize --processed: %s%s%s\n", msg, arg ? " " : "", arg ? arg : "");
    processed_usage(stderr);
    return 2;
}

/* 0 ok, 1 --help printed, 2 usage error. */
static int parse_processed(int argc, char **argv, processed_options *o)
{
    memset(o, 0, sizeof *o);
    o->sample = o->epoch = o->recycles = -1;
    o->mode = -1;
    /* before the options, so that "--processed --help" is not a request to write "--help" */
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            processed_usage(stdout);
            return 1;
        }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--quiet")) {
            o->quiet = 1;
            continue;
        } else if (!strcmp(a, "--no-shuffle")) {
            o->no_shuffle = 1;
            continue;
        }
        if (a[0] != '-') return processed_usage_error("unexpected argument", a);
        if (!v) return processed_usage_error("missing value for", a);
        i++;
        int64_t n;
        if (!strcmp(a, "--processed"))
            o->out = v;
        else if (!strcmp(a, "--features"))
            o->features = v;
        else if (!strcmp(a, "--chain"))
            o->chain = v;
        else if (!strcmp(a, "--fasta"))
            o->fasta = v;
        else if (!strcmp(a, "--template-hits"))
            o->hits = v;
        else if (!strcmp(a, "--template-mmcif-dir"))
            o->mmcif_dir = v;
        else if (!strcmp(a, "--max-template-date"))
            o->max_date = v;
        else if (!strcmp(a, "--config"))
            o->config = v;
        else if (!strcmp(a, "--msa")) {
            if (o->n_msas == MAX_PROCESSED_MSAS)
                return processed_usage_error("too many --msa files (64 at most)", NULL);
            o->msas[o->n_msas++] = v;
        } else if (!strcmp(a, "--set")) {
            if (o->n_sets == MAX_CONFIG_SETS)
                return processed_usage_error("too many --set overrides (64 at most)", NULL);
            o->sets[o->n_sets++] = v;
        } else if (!strcmp(a, "--mode")) {
            if (!strcmp(v, "train"))
                o->mode = 0;
            else if (!strcmp(v, "predict"))
                o->mode = 1;
            else
                return processed_usage_error("--mode takes train or predict, not", v);
        } else if (!strcmp(a, "--seed")) {
            char *end;
            errno = 0;
            unsigned long long s = strtoull(v, &end, 10);
            if (!*v || *end || errno || v[0] == '-')
                return processed_usage_error("--seed expects a non-negative integer, not", v);
            o->seed = (uint64_t)s;
        } else if (!strcmp(a, "--sample") || !strcmp(a, "--epoch") || !strcmp(a, "--recycles") ||
                   !strcmp(a, "--max-templates")) {
            if (parse_count(a, v, &n)) return 2;
            if (!strcmp(a, "--sample"))
                o->sample = n;
            else if (!strcmp(a, "--epoch"))
                o->epoch = n;
            else if (!strcmp(a, "--recycles"))
                o->recycles = n;
            else if (n < 1 || n > 4096)
                return processed_usage_error("--max-templates expects 1..4096, not", v);
            else
                o->max_hits = n;
        } else {
            return processed_usage_error("unknown option", a);
        }
    }
    if (!o->out) return processed_usage_error("--processed OUT.h5 is required", NULL);
    if (!o->features == !o->fasta)
        return processed_usage_error("give either --features RAW.h5 or --fasta X.fasta", NULL);
    if (o->features) {
        if (!o->chain == (o->sample < 0))
            return processed_usage_error("--features takes either --chain NAME or --sample K",
                                         NULL);
        if (o->epoch >= 0 && o->sample < 0)
            return processed_usage_error("--epoch goes with --sample", NULL);
        if (o->no_shuffle && o->sample < 0)
            return processed_usage_error("--no-shuffle goes with --sample", NULL);
        if (o->n_msas || o->hits || o->mmcif_dir || o->max_date || o->max_hits)
            return processed_usage_error(
                "--msa and the template options go with --fasta (a raw feature file has its "
                "MSA and templates)",
                NULL);
    } else {
        if (o->chain || o->sample >= 0 || o->epoch >= 0 || o->no_shuffle)
            return processed_usage_error("--chain, --sample, --epoch and --no-shuffle go with "
                                         "--features",
                                         NULL);
        if (o->mode == 0)
            return processed_usage_error(
                "--mode train needs a structure (ground truth): use --features", NULL);
        if (!o->hits != !o->mmcif_dir)
            return processed_usage_error("--template-hits and --template-mmcif-dir go together",
                                         NULL);
        if ((o->max_date || o->max_hits) && !o->hits)
            return processed_usage_error(
                "--max-template-date and --max-templates go with --template-hits", NULL);
        if (o->max_date && !mf_template_date_valid(o->max_date))
            return processed_usage_error("--max-template-date expects YYYY-MM-DD, not",
                                         o->max_date);
    }
    if (o->mode < 0) o->mode = o->features ? 0 : 1;
    return 0;
}

static void print_shape(const mf_processed_features *f, const char *name)
{
    const mf_feature *x = mf_processed_find(f, name);
    if (!x) return;
    printf("  %-28s %s [", name, x->array.dtype == MF_I32 ? "i32" : "f32");
    for (int k = 0; k < x->array.ndim; k++)
        printf(k ? ", %lld" : "%lld", (long long)x->array.shape[k]);
    printf("]%s\n", x->per_iteration ? "  (per iteration)" : "");
}

/* A raw feature file's chain by name, processed with `seed` (the pipeline's own plan). */
static mf_status processed_from_chain(const processed_options *o, const mf_pipeline_options *po,
                                      mf_processed_features *f)
{
    mf_loader_options lo = {.path = o->features, .seed = o->seed, .pipeline = *po};
    mf_loader *l = NULL;
    mf_raw_chain raw = {0};
    mf_sample_plan plan = {0};
    mf_status st = mf_loader_open(&l, &lo);
    if (st != MF_OK) return st;
    int64_t idx = -1;
    for (int64_t i = 0; i < mf_loader_num_chains(l) && idx < 0; i++)
        if (!strcmp(mf_loader_chain_name(l, i), o->chain)) idx = i;
    if (idx < 0) {
        st = MF_ERROR(MF_ERR_INVALID,
                      "--chain %s: no such group in %s (%lld chains; 'memfold "
                      "inspect %s' lists them)",
                      o->chain, o->features, (long long)mf_loader_num_chains(l), o->features);
        goto cleanup;
    }
    MF_TRY_GOTO(mf_loader_read_chain(l, idx, &raw));
    MF_TRY_GOTO(
        mf_sample_plan_make(po, raw.chain_length, raw.num_seq, raw.num_templates, o->seed, &plan));
    st = mf_pipeline_process(&raw, &plan, po, f);
    if (st != MF_OK) {
        mf_error_context(st, "%s: chain '%s'", o->features, o->chain);
        goto cleanup;
    }
    if (!o->quiet)
        printf("chain %s of %s: %lld residues, crop [%lld, %lld), %lld of %lld MSA rows kept, "
               "%lld of %lld templates, R = %lld, sample seed %llu\n",
               o->chain, o->features, (long long)raw.chain_length, (long long)plan.crop_start,
               (long long)(plan.crop_start + plan.crop_size), (long long)plan.num_kept,
               (long long)plan.num_seq, (long long)plan.num_templates, (long long)raw.num_templates,
               (long long)plan.num_iterations, (unsigned long long)o->seed);
cleanup:
    mf_sample_plan_free(&plan);
    mf_raw_chain_free(&raw);
    mf_loader_close(l);
    return st;
}

/* The loader's sample K, built exactly as the loader builds it for training. */
static mf_status processed_from_loader(const processed_options *o, const mf_pipeline_options *po,
                                       mf_processed_features *f)
{
    mf_loader_options lo = {
        .path = o->features, .seed = o->seed, .pipeline = *po, .shuffle = !o->no_shuffle};
    mf_loader *l = NULL;
    MF_TRY(mf_loader_open(&l, &lo));
    const int64_t chains = mf_loader_num_chains(l);
    int64_t epoch = o->epoch, position = o->sample;
    mf_status st = MF_OK;
    if (epoch < 0) {
        epoch = o->sample / chains;
        position = o->sample % chains;
    } else if (position >= chains) {
        st = MF_ERROR(MF_ERR_INVALID, "--sample %lld --epoch %lld: %s has %lld chains per epoch",
                      (long long)o->sample, (long long)o->epoch, o->features, (long long)chains);
    }
    mf_loader_sample_info info;
    if (st == MF_OK) st = mf_loader_sample(l, epoch, position, f, &info);
    if (st == MF_OK && !o->quiet)
        printf("loader sample %lld (epoch %lld, position %lld of %lld, %s, loader seed %llu): "
               "chain %s, %lld residues, crop [%lld, %lld), %lld of %lld MSA rows kept, %lld "
               "templates, sample seed %llu; read %.1f KiB of the chain's %.1f KiB\n",
               (long long)(epoch * chains + position), (long long)epoch, (long long)position,
               (long long)chains, o->no_shuffle ? "file order" : "shuffled",
               (unsigned long long)o->seed, info.chain, (long long)info.chain_length,
               (long long)info.crop_start, (long long)(info.crop_start + info.crop_size),
               (long long)info.num_kept_rows, (long long)info.num_seq,
               (long long)info.num_templates, (unsigned long long)info.seed,
               (double)info.bytes_read / 1024.0, (double)info.chain_bytes / 1024.0);
    mf_loader_close(l);
    return st;
}

/* A FASTA query (+ MSAs, template hits) through the inference pipeline. */
static mf_status processed_from_fasta(const processed_options *o, const mf_pipeline_options *po,
                                      mf_processed_features *f)
{
    mf_fasta fasta = {0};
    mf_template_features t = {0};
    MF_TRY(mf_fasta_read(o->fasta, MF_FASTA_UNKNOWN_TO_X, &fasta));
    mf_status st = MF_OK;
    if (fasta.num_records != 1) {
        st = MF_ERROR(MF_ERR_FORMAT, "--fasta %s: %lld sequences; a sample takes exactly one",
                      o->fasta, (long long)fasta.num_records);
        goto cleanup;
    }
    const mf_inference_inputs in = {.msa_paths = o->msas,
                                    .num_msa_paths = o->n_msas,
                                    .template_hits = o->hits,
                                    .template_mmcif_dir = o->mmcif_dir,
                                    .max_template_date = o->max_date,
                                    .max_template_hits = (int)o->max_hits};
    st = mf_pipeline_inference_features_ex(&fasta.records[0], &in, po, o->seed, f, &t);
    if (st != MF_OK) {
        mf_error_context(st, "--fasta %s", o->fasta);
        goto cleanup;
    }
    if (!o->quiet) {
        printf("query '%s' of %s: %lld residues, %d MSA file%s, R = %lld, seed %llu\n",
               fasta.records[0].description, o->fasta, (long long)fasta.records[0].length,
               o->n_msas, o->n_msas == 1 ? "" : "s", (long long)f->num_iterations,
               (unsigned long long)o->seed);
        if (o->hits) {
            const int64_t kept =
                t.num_templates < po->max_templates ? t.num_templates : po->max_templates;
            printf("templates from %s: %d featurized (%lld realigned), the first %lld used:",
                   o->hits, t.num_templates, (long long)t.realigned, (long long)kept);
            for (int k = 0; k < t.num_templates; k++)
                printf("%s%s", k == kept ? " | unused: " : " ", t.domain_names[k]);
            printf("\n");
            for (int k = 0; k < MF_TSKIP_COUNT; k++)
                if (t.skipped[k])
                    printf("  hits skipped, %s: %lld\n", mf_template_skip_name((mf_template_skip)k),
                           (long long)t.skipped[k]);
        }
    }
cleanup:
    mf_template_features_free(&t);
    mf_fasta_free(&fasta);
    return st;
}

static int featurize_processed(int argc, char **argv)
{
    processed_options o;
    const int rc = parse_processed(argc, argv, &o);
    if (rc) return rc == 1 ? 0 : rc;
    mf_config *cfg = malloc(sizeof *cfg);
    if (!cfg) {
        fprintf(stderr, "memfold featurize: out of memory\n");
        return 1;
    }
    mf_processed_features f;
    mf_processed_init(&f);
    mf_status st =
        mf_config_load_with_overrides(o.config ? o.config : "af2-initial", o.sets, o.n_sets, cfg);
    if (st == MF_OK) {
        mf_pipeline_options po =
            o.mode == 0 ? mf_pipeline_options_training(cfg) : mf_pipeline_options_inference(cfg);
        if (o.recycles >= 0) po.num_iterations = o.recycles + 1;
        if (o.fasta)
            st = processed_from_fasta(&o, &po, &f);
        else if (o.chain)
            st = processed_from_chain(&o, &po, &f);
        else
            st = processed_from_loader(&o, &po, &f);
    }
    if (st == MF_OK) st = mf_processed_write(o.out, &f);
    if (st == MF_OK && !o.quiet) {
        printf("wrote %s: %d features, N = %lld, R = %lld, mode %s (config %s)\n", o.out,
               f.num_features, (long long)f.num_res, (long long)f.num_iterations,
               o.mode == 0 ? "train" : "predict", o.config ? o.config : "af2-initial");
        static const char *shown[] = {"aatype",          "msa_feat",      "extra_msa",
                                      "template_aatype", "template_mask", "all_atom_positions",
                                      "use_clamped_fape"};
        for (size_t k = 0; k < sizeof shown / sizeof shown[0]; k++) print_shape(&f, shown[k]);
    }
    mf_processed_free(&f);
    free(cfg);
    return st == MF_OK ? 0 : mf_report_error("featurize --processed");
}

int mf_cmd_featurize(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--processed")) return featurize_processed(argc, argv);
    mf_featurize_options o = {0};
    int quiet = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int64_t n;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            featurize_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--quiet")) {
            quiet = 1;
            continue;
        }
        if (!v || a[0] != '-') {
            fprintf(stderr, "memfold featurize: %s '%s'\n",
                    a[0] == '-' ? "missing value for" : "unexpected argument", a);
            featurize_usage(stderr);
            return 2;
        }
        i++;
        if (!strcmp(a, "--structures"))
            o.structures_dir = v;
        else if (!strcmp(a, "-o") || !strcmp(a, "--output"))
            o.output = v;
        else if (!strcmp(a, "--msa-dir"))
            o.msa_dir = v;
        else if (!strcmp(a, "--template-hits"))
            o.template_hits_dir = v;
        else if (!strcmp(a, "--template-mmcif-dir"))
            o.template_mmcif_dir = v;
        else if (!strcmp(a, "--max-template-date"))
            o.max_template_date = v;
        else if (!strcmp(a, "--release-before"))
            o.release_before = v;
        else if (!strcmp(a, "--jackhmmer-db"))
            o.jackhmmer_db = v;
        else if (!strcmp(a, "--jackhmmer-bin"))
            o.jackhmmer_bin = v;
        else if (!strcmp(a, "--max-resolution")) {
            if (parse_num(a, v, &o.max_resolution)) return 2;
        } else if (!strcmp(a, "--min-length")) {
            if (parse_count(a, v, &o.min_length)) return 2;
        } else if (!strcmp(a, "--max-length")) {
            if (parse_count(a, v, &o.max_length)) return 2;
        } else if (!strcmp(a, "--max-templates") || !strcmp(a, "--jobs")) {
            if (parse_count(a, v, &n)) return 2;
            if (n < 1 || n > 4096) {
                fprintf(stderr, "memfold featurize: %s %s: expected 1..4096\n", a, v);
                return 2;
            }
            if (!strcmp(a, "--jobs"))
                o.jobs = (int)n;
            else
                o.max_templates = (int)n;
        } else {
            fprintf(stderr, "memfold featurize: unknown option '%s'\n", a);
            featurize_usage(stderr);
            return 2;
        }
    }
    if (!o.structures_dir || !o.output) {
        fprintf(stderr, "memfold featurize: --structures and -o are required\n");
        featurize_usage(stderr);
        return 2;
    }
    o.cancel = &interrupted;
    struct sigaction sa = {0}, old_int, old_term;
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);

    progress_state p = {.tty = isatty(2), .quiet = quiet, .last_decile = -1};
    mf_featurize_report r;
    mf_status st = mf_featurize_run(&o, on_progress, &p, &r);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    if (st != MF_OK && r.files_total == 0) { /* nothing ran: options or directory */
        mf_featurize_report_free(&r);
        return mf_report_error("featurize");
    }
    print_report(&o, &r, st == MF_OK);
    mf_featurize_report_free(&r);
    if (st != MF_OK) {
        mf_report_error("featurize");
        return interrupted ? 130 : 1;
    }
    return 0;
}
