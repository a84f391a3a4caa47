/* memfold featurize: structure files (+ MSAs, template hits) -> an AlphaFold 2 feature file.
 * Argument parsing, progress and the closing report; the work is data/featurize.c. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "apps/commands.h"
#include "data/featurize.h"

static void featurize_usage(FILE *f)
{
    fprintf(
        f,
        "usage: memfold featurize --structures DIR -o OUT.h5 [options]\n"
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

int mf_cmd_featurize(int argc, char **argv)
{
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
