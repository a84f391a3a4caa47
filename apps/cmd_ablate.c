/* memfold ablate: the memory/accuracy ablation harness. For each memory policy of a grid it trains
 * a fixed dataset from a fixed seed for N steps and predicts held-out targets, each as a child
 * process of this binary (so each child's process peak is its own, from wait4()'s rusage), then
 * compares every point with a baseline policy: arena and process peaks, the memory model's
 * prediction (memfold memplan), step time, loss trajectory, and the predictions' lDDT-Ca and
 * TM-score against the baseline's prediction and the true structure. Writes ablate.csv,
 * ablate_lengths.csv and ablate.json, then scripts/ablate_report.py makes the plots and
 * report.html. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "apps/cli.h"
#include "apps/commands.h"
#include "model/memplan_model.h"
#include "data/fasta.h"
#include "data/loader.h"
#include "data/structure_io.h"
#include "eval/align.h"
#include "eval/lddt.h"
#include "eval/tmscore.h"
#include "memopt/arena.h"
#include "memopt/policy.h"
#include "model/config.h"

extern char **environ;

#define MAX_POINTS  256
#define MAX_TARGETS 16
#define MAX_SETS    32
#define PATH_CAP    4096
#define CA          1    /* atom37 slot of C-alpha */
#define MAX_ARG     1024 /* longest path or list argument */
/* The children run this very binary (argv[0] shows its resolved path, for messages). */
#define SELF_EXE "/proc/self/exe"

/* Defaults of the run without --grid/--policy, sized for under 20 minutes on 2 CPU cores. */
#define DEFAULT_STEPS   100
#define DEFAULT_CHAINS  24
#define DEFAULT_TARGETS "T1082,T1119-D1,T1029,T1099,T1042"
static const char *const default_policies[] = {
    "chunk=16",
    "recompute=block",
    "recompute=every:2",
    "recompute=block storage=bf16",
    "compute=bf16",
    "recompute=block offload=on",
    "chunk=16 recompute=block storage=bf16 compute=bf16 offload=on",
};
/* The demo's deviations from AF2 for a short CPU run (scripts/demo explains them). */
static const char *const train_sets[] = {"optimizer.clip_global_norm=0", "optimizer.ema_decay=0.99",
                                         "loss.weights.violation=0"};

static const char *const policy_keys[] = {"chunk", "recompute", "storage", "compute", "offload"};
#define NUM_KEYS 5

static void ablate_usage(FILE *f)
{
    fprintf(
        f,
        "usage: memfold ablate -o DIR [--grid \"KEY=V1,V2 ...\"] [--policy \"KEY=V ...\" ...]\n"
        "                      [--baseline \"KEY=V ...\"] [--steps N] [--seed S] [--config C]\n"
        "                      [--set K=V ...] [--data FILE.h5] [--train-chains N]\n"
        "                      [--targets NAME,NAME,...] [--target FASTA[:REF] ...]\n"
        "                      [--threads T] [--no-report]\n"
        "\n"
        "Memory/accuracy ablation: for each memory policy, `memfold train` for N steps on a\n"
        "fixed dataset and seed, then `memfold predict` of held-out targets with that run's\n"
        "EMA weights (params.h5), every one a child process of this binary, so that its process\n"
        "peak (ru_maxrss of wait4) is its own. Each point is compared with the baseline.\n"
        "\n"
        "Policies. KEY is chunk (off|N rows), recompute (off|block|every:K), storage (f32|bf16),\n"
        "compute (f32|bf16) or offload (on|off); a key a point does not give takes the\n"
        "baseline's value (all-off f32 when no --baseline is given).\n"
        "  --grid \"chunk=off,16 recompute=off,block storage=f32,bf16\"\n"
        "                      the cartesian product of the listed values (the first key\n"
        "                      varies slowest); repeatable\n"
        "  --policy \"chunk=16 recompute=block\"\n"
        "                      one explicit point; repeatable, in order with --grid\n"
        "  --baseline \"...\"    the reference point (run first); default: the first point, or\n"
        "                      all-off f32 without --grid/--policy. Repeated points run once.\n"
        "  Without --grid/--policy: the all-off f32 baseline and\n");
    for (size_t i = 0; i < sizeof default_policies / sizeof *default_policies; i++)
        fprintf(f, "                        %s\n", default_policies[i]);
    fprintf(
        f,
        "\n"
        "Training and data.\n"
        "  --steps N           training steps per point (default %d)\n"
        "  --seed S            parameters, sample order and dropout (default 1); the same for\n"
        "                      every point, so the loss trajectories differ by numerics only\n"
        "  --config C          preset or JSON (default tiny); --set K=V adds a training override\n"
        "                      (not memory.*: the policy is the point's). Also always set, as\n"
        "                      scripts/demo does: optimizer.clip_global_norm=0,\n"
        "                      optimizer.ema_decay=0.99, loss.weights.violation=0\n"
        "  --data FILE.h5      training features ('memfold featurize'); default: "
        "DIR/data/train.h5\n"
        "                      featurized here from the --train-chains N (default %d) shortest\n"
        "                      PSICOV-150 chains (>= 30 residues, single sequence) of the\n"
        "                      bundled data, $MEMFOLD_SHARED/data (default: ../shared beside\n"
        "                      the checkout)\n"
        "  --targets LIST      held-out CASP targets of the bundled data, predicted from their\n"
        "                      FASTA sequence (single sequence) and scored against their true\n"
        "                      structure (default %s: 75, 48, 125, 188 and 276 residues);\n"
        "                      the first is the accuracy target, all of them give memory vs\n"
        "                      sequence length\n"
        "  --target FASTA[:REF] a target of your own (one sequence; REF: its true structure);\n"
        "                      repeatable, replaces --targets\n"
        "  --threads T         OMP_NUM_THREADS of the children (default 1: the tiny model's ops\n"
        "                      are too small for threads; 0 keeps the environment's)\n"
        "  --no-report         write the CSV and JSON files only\n"
        "\n"
        "Outputs in DIR: data/ (features, target FASTA files), points/NN/ (run/: the training\n"
        "run; pred/: predictions; *.log: the children's output; memplan-*.json), and\n"
        "  ablate.csv          one row per point, the accuracy target's inference:\n"
        "    point, label, chunk, recompute, storage, compute, offload   the policy\n"
        "    steps, train_arena_peak_bytes (max over steps of the log's arena_peak_bytes),\n"
        "    train_rss_peak_bytes (ru_maxrss of the train child), train_memplan_peak_bytes\n"
        "    ('memfold memplan --mode train' peak_bytes, or n/a), step_time_median_s,\n"
        "    train_wall_s, final_loss, loss_dev_max_rel (max over steps of\n"
        "    |loss - loss_base| / |loss_base|), loss_final_diff (loss - loss_base at the last\n"
        "    step), skipped_steps,\n"
        "    target, nres, infer_arena_peak_bytes (predict's JSON arena_high_water_bytes),\n"
        "    infer_rss_peak_bytes (ru_maxrss of the predict child), infer_memplan_peak_bytes,\n"
        "    infer_time_s, mean_plddt, lddt_ca_vs_base, tm_vs_base (against the baseline's\n"
        "    prediction), lddt_ca_vs_true, tm_vs_true (against the true structure; n/a\n"
        "    without one)\n"
        "  ablate_lengths.csv  one row per point and target: point, label, target, nres and the\n"
        "                      infer_* and accuracy columns above\n"
        "  ablate.json         all of it, plus each point's loss per step and the commands\n"
        "  report.html         the table, the plots (*.png) and a 3-D view of the baseline's\n"
        "                      prediction coloured by pLDDT (scripts/ablate_report.py; opens\n"
        "                      offline; scripts/check_report checks it in headless Chromium)\n"
        "memplan is run as `memfold memplan --config RUN/config.json --mode train|infer\n"
        "--nres N --nseq S --nextra E --ntempl T [--iterations I] --chunk N --recompute R\n"
        "--storage S --compute C --offload on|off --json`, for train the largest sample of the\n"
        "data (N = min(crop_size, longest chain), S and E the config's cluster and extra rows, to\n"
        "which training pads the MSA, T its templates, I = num_recycle + 1, the most\n"
        "iterations a step runs), for infer the target (N its length, S = 1, E = T = 0: a FASTA\n"
        "query alone); peak_bytes of its JSON is compared with the arena peak. When memplan is\n"
        "missing or fails the value is n/a and ablate.json says why.\n"
        "A progress line per point goes to stderr. A failing child stops the run with its\n"
        "command and exit status; report.html is then not written. Exit status: 0 done,\n"
        "1 error, 2 usage.\n",
        DEFAULT_STEPS, DEFAULT_CHAINS, DEFAULT_TARGETS);
}

/* ---------------------------------------------------------------------------------------------
 * Policies and the grid */

typedef struct {
    char name[128];
    char fasta[PATH_CAP];
    char ref[PATH_CAP]; /* "" when there is no true structure */
    int64_t nres;
} target;

typedef struct {
    double arena, rss, seconds, memplan; /* memplan NAN: n/a */
    double mean_plddt;
    double lddt_base, tm_base, lddt_true, tm_true; /* NAN: not computed */
    char memplan_note[256];
    char pdb[PATH_CAP];
} infer_result;

typedef struct {
    mf_policy policy;
    char spec[160];  /* every key: "chunk=16 recompute=block storage=f32 compute=f32 offload=off" */
    char label[160]; /* the keys that differ from all-off f32, or "all-off f32" */
    char dir[PATH_CAP];
    double *loss;
    int64_t n_loss, skipped;
    double train_arena, train_rss, step_median, train_wall, final_loss;
    double dev_max_rel, dev_final, train_memplan;
    char train_memplan_note[256];
    infer_result inf[MAX_TARGETS];
} point;

/* snprintf for paths, names and notes: arguments are limited to MAX_ARG characters at parsing, so
 * the buffers hold every composed path; a truncation would be a bug and stops the command. */
__attribute__((format(printf, 3, 4))) static void fmt(char *buf, size_t cap, const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    const int n = vsnprintf(buf, cap, f, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap) {
        fprintf(stderr, "memfold ablate: internal error: text longer than %zu bytes: %.80s...\n",
                cap, buf);
        exit(1);
    }
}

/* The same for notes, where a long message may be cut. */
__attribute__((format(printf, 3, 4))) static void tfmt(char *buf, size_t cap, const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    vsnprintf(buf, cap, f, ap);
    va_end(ap);
}

static void policy_value(const mf_policy *p, int key, char *buf, size_t cap)
{
    switch (key) {
    case 0:
        if (p->chunk_size > 0)
            snprintf(buf, cap, "%lld", (long long)p->chunk_size);
        else
            snprintf(buf, cap, "off");
        break;
    case 1:
        if (p->recompute == MF_RECOMPUTE_OFF)
            snprintf(buf, cap, "off");
        else if (p->recompute == MF_RECOMPUTE_BLOCK)
            snprintf(buf, cap, "block");
        else
            snprintf(buf, cap, "every:%d", p->recompute_every);
        break;
    case 2:
        snprintf(buf, cap, "%s", p->storage == MF_BF16 ? "bf16" : "f32");
        break;
    case 3:
        snprintf(buf, cap, "%s", p->compute == MF_BF16 ? "bf16" : "f32");
        break;
    default:
        snprintf(buf, cap, "%s", p->offload ? "on" : "off");
        break;
    }
}

static void describe_point(point *pt)
{
    const mf_policy def = mf_policy_default();
    size_t ns = 0, nl = 0;
    pt->spec[0] = pt->label[0] = '\0';
    for (int k = 0; k < NUM_KEYS; k++) {
        char v[32], d[32];
        policy_value(&pt->policy, k, v, sizeof v);
        policy_value(&def, k, d, sizeof d);
        ns += (size_t)snprintf(pt->spec + ns, sizeof pt->spec - ns, "%s%s=%s", k ? " " : "",
                               policy_keys[k], v);
        if (strcmp(v, d))
            nl += (size_t)snprintf(pt->label + nl, sizeof pt->label - nl, "%s%s=%s", nl ? " " : "",
                                   policy_keys[k], v);
    }
    if (!nl) snprintf(pt->label, sizeof pt->label, "all-off f32");
}

static int key_index(const char *key)
{
    for (int k = 0; k < NUM_KEYS; k++)
        if (!strcmp(key, policy_keys[k])) return k;
    return -1;
}

/* A usage error of a policy string: names the option, the item and why. */
static int policy_error(const char *opt, const char *item, const char *why)
{
    fprintf(stderr, "memfold ablate: %s: '%s': %s\n", opt, item, why);
    fprintf(stderr, "(keys: chunk=off|N, recompute=off|block|every:K, storage=f32|bf16, "
                    "compute=f32|bf16, offload=on|off; 'memfold ablate --help')\n");
    return 2;
}

/* Splits "k=v1,v2 k2=v" at whitespace into at most NUM_KEYS items of key and comma list; each
 * value is checked with the policy's own parser. allow_lists: --grid. 0 or a usage exit code. */
typedef struct {
    int key[NUM_KEYS];
    char values[NUM_KEYS][16][32];
    int n_values[NUM_KEYS];
    int n;
} policy_items;

static int parse_items(const char *opt, const char *text, bool allow_lists, policy_items *it)
{
    memset(it, 0, sizeof *it);
    char buf[1024];
    if (strlen(text) >= sizeof buf) return policy_error(opt, text, "too long");
    snprintf(buf, sizeof buf, "%s", text);
    for (char *save = NULL, *tok = strtok_r(buf, " \t\n", &save); tok;
         tok = strtok_r(NULL, " \t\n", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq || eq == tok || !eq[1]) return policy_error(opt, tok, "expected KEY=VALUE");
        *eq = '\0';
        const int k = key_index(tok);
        if (k < 0) {
            char why[96];
            snprintf(why, sizeof why, "unknown key '%s'", tok);
            *eq = '=';
            return policy_error(opt, tok, why);
        }
        for (int i = 0; i < it->n; i++)
            if (it->key[i] == k) {
                *eq = '=';
                return policy_error(opt, tok, "key given twice");
            }
        const int slot = it->n++;
        it->key[slot] = k;
        char *vals = eq + 1;
        for (char *vs = NULL, *v = strtok_r(vals, ",", &vs); v; v = strtok_r(NULL, ",", &vs)) {
            if (it->n_values[slot] == 16 || strlen(v) >= 32)
                return policy_error(opt, v, "too many or too long values");
            mf_policy scratch = mf_policy_default();
            if (mf_policy_set(&scratch, policy_keys[k], v) != MF_OK) {
                char why[300];
                snprintf(why, sizeof why, "bad value '%s' of key '%s' (%s)", v, policy_keys[k],
                         mf_last_error());
                return policy_error(opt, text, why);
            }
            snprintf(it->values[slot][it->n_values[slot]++], 32, "%s", v);
        }
        if (it->n_values[slot] == 0) return policy_error(opt, text, "a key without values");
        if (it->n_values[slot] > 1 && !allow_lists)
            return policy_error(opt, text, "one value per key here (lists go in --grid)");
    }
    if (it->n == 0) return policy_error(opt, text, "no KEY=VALUE item");
    return 0;
}

/* Appends the points of items (cartesian product) over base, skipping repeats. */
static int add_points(const policy_items *it, const mf_policy *base, point *pts, int *n)
{
    int idx[NUM_KEYS] = {0};
    for (;;) {
        point p = {0};
        p.policy = *base;
        for (int i = 0; i < it->n; i++)
            mf_policy_set(&p.policy, policy_keys[it->key[i]], it->values[i][idx[i]]);
        describe_point(&p);
        bool dup = false;
        for (int j = 0; j < *n && !dup; j++) dup = !strcmp(pts[j].spec, p.spec);
        if (!dup) {
            if (*n == MAX_POINTS) {
                fprintf(stderr, "memfold ablate: more than %d points\n", MAX_POINTS);
                return 2;
            }
            pts[(*n)++] = p;
        }
        int i = it->n - 1; /* odometer: the last key varies fastest */
        while (i >= 0 && ++idx[i] == it->n_values[i]) idx[i--] = 0;
        if (i < 0) return 0;
    }
}

/* ---------------------------------------------------------------------------------------------
 * Child processes */

typedef struct {
    int status; /* wait4 status */
    double rss; /* ru_maxrss, bytes */
    double seconds;
} child_result;

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void command_text(char *const argv[], char *buf, size_t cap)
{
    size_t n = 0;
    buf[0] = '\0';
    for (int i = 0; argv[i] && n + 1 < cap; i++) {
        const bool quote = strpbrk(argv[i], " \t\"'$") != NULL || !argv[i][0];
        n += (size_t)snprintf(buf + n, cap - n, quote ? "%s'%s'" : "%s%s", i ? " " : "", argv[i]);
    }
}

/* Runs prog with argv (argv[0] is only shown) and waits; stdout goes to out_path, stderr to
 * err_path (NULL: into out_path). Returns -1 when it could not start (message set). */
static int run_child(const char *prog, char *const argv[], const char *out_path,
                     const char *err_path, child_result *r)
{
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (err_path)
        posix_spawn_file_actions_addopen(&fa, 2, err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    else
        posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t pid;
    const double t0 = now_seconds();
    const int e = strchr(prog, '/') ? posix_spawn(&pid, prog, &fa, NULL, argv, environ)
                                    : posix_spawnp(&pid, prog, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (e) {
        char cmd[1024];
        command_text(argv, cmd, sizeof cmd);
        MF_ERROR(MF_ERR_IO, "cannot start %s (%s): %s", prog, cmd, strerror(e));
        return -1;
    }
    struct rusage ru;
    int status = 0;
    pid_t w;
    while ((w = wait4(pid, &status, 0, &ru)) < 0 && errno == EINTR) {
    }
    if (w < 0) {
        MF_ERROR(MF_ERR_IO, "wait4 for %s: %s", prog, strerror(errno));
        return -1;
    }
    r->status = status;
    r->seconds = now_seconds() - t0;
    r->rss = (double)ru.ru_maxrss * 1024.0; /* Linux reports KiB */
    return 0;
}

/* A child's argument vector, built in pieces (argv[n] stays NULL). */
typedef struct {
    char *v[64];
    int n;
} arglist;

/* Appends the NULL-terminated list of strings. */
static void args(arglist *l, ...)
{
    va_list ap;
    va_start(ap, l);
    for (const char *s; (s = va_arg(ap, const char *)) != NULL && l->n < 63;)
        l->v[l->n++] = (char *)s;
    va_end(ap);
    l->v[l->n] = NULL;
}

static bool child_ok(const child_result *r)
{
    return WIFEXITED(r->status) && WEXITSTATUS(r->status) == 0;
}

static void status_text(int status, char *buf, size_t cap)
{
    if (WIFEXITED(status))
        snprintf(buf, cap, "exit status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, cap, "killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(buf, cap, "wait status %d", status);
}

/* The failure of a required child: its command, exit status and the end of its log. */
static int child_failed(const char *what, char *const argv[], const child_result *r,
                        const char *log)
{
    char cmd[4096], st[96];
    command_text(argv, cmd, sizeof cmd);
    status_text(r->status, st, sizeof st);
    fprintf(stderr, "memfold ablate: %s failed: %s\n  command: %s\n  output: %s\n", what, st, cmd,
            log);
    FILE *f = fopen(log, "r");
    if (f) {
        char lines[8][512];
        int n = 0;
        while (fgets(lines[n % 8], sizeof lines[0], f)) n++;
        fclose(f);
        for (int i = n > 8 ? n - 8 : 0; i < n; i++) fprintf(stderr, "  | %s", lines[i % 8]);
    }
    fprintf(stderr, "memfold ablate: stopped; no report written\n");
    return 1;
}

/* ---------------------------------------------------------------------------------------------
 * Files */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static mf_status remove_tree(const char *path)
{
    struct stat sb;
    if (lstat(path, &sb) != 0) return MF_OK;
    if (nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        return MF_ERROR(MF_ERR_IO, "cannot remove %s: %s", path, strerror(errno));
    return MF_OK;
}

static mf_status make_dir(const char *path)
{
    if (mkdir(path, 0777) == 0 || errno == EEXIST) {
        struct stat sb;
        if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) return MF_OK;
    }
    return MF_ERROR(MF_ERR_IO, "cannot create directory %s: %s", path, strerror(errno));
}

static bool is_file(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static void dir_of(const char *path, char *out, size_t cap)
{
    fmt(out, cap, "%s", path);
    char *slash = strrchr(out, '/');
    if (slash && slash != out)
        *slash = '\0';
    else if (slash)
        slash[1] = '\0';
    else
        fmt(out, cap, ".");
}

/* The checkout: $MEMFOLD_SOURCE, else the first folder above the executable that holds
 * scripts/ablate_report.py (build folders live inside the checkout). "" when none. */
static void find_checkout(const char *exe, char *root, size_t cap)
{
    const char *env = getenv("MEMFOLD_SOURCE");
    root[0] = '\0';
    if (env && *env) {
        fmt(root, cap, "%s", env);
        return;
    }
    char dir[PATH_CAP], probe[PATH_CAP + 64];
    dir_of(exe, dir, sizeof dir);
    for (int up = 0; up < 6; up++) {
        fmt(probe, sizeof probe, "%s/scripts/ablate_report.py", dir);
        if (is_file(probe)) {
            fmt(root, cap, "%s", dir);
            return;
        }
        char parent[PATH_CAP];
        dir_of(dir, parent, sizeof parent);
        if (!strcmp(parent, dir)) break;
        fmt(dir, sizeof dir, "%s", parent);
    }
}

/* ---------------------------------------------------------------------------------------------
 * The bundled data: training chains and held-out targets from shared/data/manifest.tsv */

typedef struct {
    int64_t length;
    char path[512];
} manifest_row;

static int cmp_rows(const void *a, const void *b)
{
    const manifest_row *x = a, *y = b;
    if (x->length != y->length) return x->length < y->length ? -1 : 1;
    return strcmp(x->path, y->path);
}

/* Fields of one manifest line (tab separated, in place). */
static int split_tabs(char *line, char **f, int cap)
{
    int n = 0;
    line[strcspn(line, "\r\n")] = '\0';
    for (char *p = line; n < cap;) {
        f[n++] = p;
        char *t = strchr(p, '\t');
        if (!t) break;
        *t = '\0';
        p = t + 1;
    }
    return n;
}

/* Links the n shortest PSICOV-150 chains (>= 30 residues) into dir, as scripts/demo picks them. */
static mf_status link_training_chains(const char *data, const char *dir, int n)
{
    char path[PATH_CAP];
    fmt(path, sizeof path, "%s/manifest.tsv", data);
    FILE *f = fopen(path, "r");
    if (!f) return MF_ERROR(MF_ERR_IO, "cannot read %s: %s", path, strerror(errno));
    manifest_row *rows = NULL;
    size_t count = 0, cap = 0;
    char line[4096];
    mf_status st = MF_OK;
    while (fgets(line, sizeof line, f)) {
        char *fld[16];
        if (split_tabs(line, fld, 16) < 6) continue;
        const char *pre = "structures/train/psicov150/";
        const long long len = atoll(fld[5]);
        if (strncmp(fld[0], pre, strlen(pre)) || len < 30 || strlen(fld[0]) >= 512) continue;
        if (count == cap) {
            cap = cap ? 2 * cap : 256;
            manifest_row *grown = realloc(rows, cap * sizeof *rows);
            if (!grown) {
                st = MF_ERROR(MF_ERR_NOMEM, "manifest rows");
                goto cleanup;
            }
            rows = grown;
        }
        rows[count].length = len;
        snprintf(rows[count].path, sizeof rows[count].path, "%s", fld[0]);
        count++;
    }
    if (count < (size_t)n) {
        st = MF_ERROR(MF_ERR_FORMAT, "%s: %zu PSICOV-150 chains of >= 30 residues, %d asked for",
                      path, count, n);
        goto cleanup;
    }
    qsort(rows, count, sizeof *rows, cmp_rows);
    for (int i = 0; i < n; i++) {
        char src[PATH_CAP], dst[PATH_CAP + 512];
        fmt(src, sizeof src, "%s/%s", data, rows[i].path);
        const char *base = strrchr(rows[i].path, '/');
        fmt(dst, sizeof dst, "%s/%s", dir, base ? base + 1 : rows[i].path);
        if (symlink(src, dst) != 0) {
            st = MF_ERROR(MF_ERR_IO, "cannot link %s to %s: %s", dst, src, strerror(errno));
            goto cleanup;
        }
    }
cleanup:
    fclose(f);
    free(rows);
    return st;
}

/* The held-out target `name` of the bundled data: its structure (manifest set heldout*) and its
 * FASTA record (fasta/casp/heldout_core.fasta, then heldout_extra.fasta), written to fasta_out. */
static mf_status bundled_target(const char *data, const char *name, const char *fasta_out,
                                target *t)
{
    char path[PATH_CAP], want[300];
    fmt(path, sizeof path, "%s/manifest.tsv", data);
    fmt(want, sizeof want, "/%s.pdb", name);
    FILE *f = fopen(path, "r");
    if (!f) return MF_ERROR(MF_ERR_IO, "cannot read %s: %s", path, strerror(errno));
    char line[4096];
    t->ref[0] = '\0';
    while (!t->ref[0] && fgets(line, sizeof line, f)) {
        char *fld[16];
        if (split_tabs(line, fld, 16) < 2 || strncmp(fld[1], "heldout", 7)) continue;
        const size_t lp = strlen(fld[0]), lw = strlen(want);
        if (lp > lw && !strcmp(fld[0] + lp - lw, want))
            fmt(t->ref, sizeof t->ref, "%s/%s", data, fld[0]);
    }
    fclose(f);
    if (!t->ref[0])
        return MF_ERROR(MF_ERR_INVALID,
                        "--targets: no held-out target '%s' in %s (manifest set heldout*, a file "
                        "named %s.pdb)",
                        name, path, name);
    const char *files[] = {"fasta/casp/heldout_core.fasta", "fasta/casp/heldout_extra.fasta"};
    for (int i = 0; i < 2; i++) {
        fmt(path, sizeof path, "%s/%s", data, files[i]);
        mf_fasta fa = {0};
        MF_TRY(mf_fasta_read(path, MF_FASTA_UNKNOWN_TO_X, &fa));
        for (int64_t r = 0; r < fa.num_records; r++) {
            const char *d = fa.records[r].description;
            const size_t ln = strlen(name);
            if (strncmp(d, name, ln) || (d[ln] && d[ln] != ' ' && d[ln] != '\t')) continue;
            FILE *o = fopen(fasta_out, "w");
            if (!o) {
                mf_fasta_free(&fa);
                return MF_ERROR(MF_ERR_IO, "cannot write %s: %s", fasta_out, strerror(errno));
            }
            fprintf(o, ">%s\n%s\n", d, fa.records[r].sequence);
            const bool bad = fclose(o) != 0;
            t->nres = fa.records[r].length;
            mf_fasta_free(&fa);
            if (bad) return MF_ERROR(MF_ERR_IO, "writing %s failed", fasta_out);
            fmt(t->fasta, sizeof t->fasta, "%s", fasta_out);
            fmt(t->name, sizeof t->name, "%s", name);
            return MF_OK;
        }
        mf_fasta_free(&fa);
    }
    return MF_ERROR(MF_ERR_INVALID, "--targets: no FASTA record '>%s' in %s/fasta/casp/", name,
                    data);
}

/* --target FASTA[:REF]. */
static mf_status own_target(const char *arg, target *t)
{
    fmt(t->fasta, sizeof t->fasta, "%s", arg);
    t->ref[0] = '\0';
    char *colon = strchr(t->fasta, ':');
    if (colon) {
        *colon = '\0';
        fmt(t->ref, sizeof t->ref, "%s", colon + 1);
        if (!is_file(t->ref))
            return MF_ERROR(MF_ERR_IO, "--target %s: no structure file %s", arg, t->ref);
    }
    mf_fasta fa = {0};
    mf_status st = mf_fasta_read(t->fasta, MF_FASTA_UNKNOWN_TO_X, &fa);
    if (st != MF_OK) return mf_error_context(st, "--target %s", arg);
    if (fa.num_records != 1) {
        mf_fasta_free(&fa);
        return MF_ERROR(MF_ERR_FORMAT, "--target %s: %lld sequences, one expected", t->fasta,
                        (long long)fa.num_records);
    }
    t->nres = fa.records[0].length;
    mf_fasta_free(&fa);
    const char *base = strrchr(t->fasta, '/');
    base = base ? base + 1 : t->fasta;
    if (strlen(base) >= sizeof t->name)
        return MF_ERROR(MF_ERR_INVALID, "--target %s: file name too long", arg);
    fmt(t->name, sizeof t->name, "%s", base);
    char *dot = strrchr(t->name, '.');
    if (dot && dot != t->name) *dot = '\0';
    return MF_OK;
}

/* What memplan needs of one sample: residues, MSA clusters, extra MSA rows, templates. */
typedef struct {
    int64_t nres, nseq, nextra, ntempl;
} sample_extent;

/* The largest training sample of a feature file under cfg (model/memplan_model.h). */
static mf_status training_extent(const char *path, const mf_config *cfg, sample_extent *e)
{
    mf_memplan_shape sh;
    MF_TRY(mf_memplan_training_shape(path, cfg, &sh));
    *e = (sample_extent){sh.n_res, sh.n_seq, sh.n_extra, sh.n_templ};
    return MF_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Reading the children's outputs */

/* RUN/log.csv: loss per step, max arena peak, median step time, skipped steps. */
static mf_status read_train_log(const char *run, point *pt)
{
    char path[PATH_CAP];
    fmt(path, sizeof path, "%s/log.csv", run);
    FILE *f = fopen(path, "r");
    if (!f) return MF_ERROR(MF_ERR_IO, "cannot read %s: %s", path, strerror(errno));
    static char line[1 << 16];
    int c_step = -1, c_loss = -1, c_arena = -1, c_time = -1, c_skip = -1;
    mf_status st = MF_OK;
    double *times = NULL;
    size_t cap = 0;
    pt->n_loss = 0;
    if (!fgets(line, sizeof line, f)) {
        st = MF_ERROR(MF_ERR_FORMAT, "%s: empty", path);
        goto cleanup;
    }
    {
        line[strcspn(line, "\r\n")] = '\0';
        int col = 0;
        for (char *s = NULL, *tok = strtok_r(line, ",", &s); tok; tok = strtok_r(NULL, ",", &s)) {
            if (!strcmp(tok, "step")) c_step = col;
            if (!strcmp(tok, "loss")) c_loss = col;
            if (!strcmp(tok, "arena_peak_bytes")) c_arena = col;
            if (!strcmp(tok, "step_time_s")) c_time = col;
            if (!strcmp(tok, "skipped")) c_skip = col;
            col++;
        }
    }
    if (c_step < 0 || c_loss < 0 || c_arena < 0 || c_time < 0 || c_skip < 0) {
        st =
            MF_ERROR(MF_ERR_FORMAT,
                     "%s: header lacks step, loss, skipped, arena_peak_bytes or step_time_s", path);
        goto cleanup;
    }
    pt->train_arena = 0;
    pt->skipped = 0;
    for (int64_t row = 2; fgets(line, sizeof line, f); row++) {
        double v[64];
        int n = 0;
        for (char *p = line; n < 64;) {
            char *end;
            v[n++] = strtod(p, &end); /* nan/inf parse as such */
            p = strchr(end, ',');
            if (!p) break;
            p++;
        }
        if (n <= c_loss || n <= c_arena || n <= c_time || n <= c_skip || n <= c_step) {
            st = MF_ERROR(MF_ERR_FORMAT, "%s:%lld: %d fields", path, (long long)row, n);
            goto cleanup;
        }
        if ((size_t)pt->n_loss == cap) {
            cap = cap ? 2 * cap : 256;
            double *l2 = realloc(pt->loss, cap * sizeof(double));
            double *t2 = l2 ? realloc(times, cap * sizeof(double)) : NULL;
            if (l2) pt->loss = l2;
            if (t2) times = t2;
            if (!l2 || !t2) {
                st = MF_ERROR(MF_ERR_NOMEM, "training log of %s", path);
                goto cleanup;
            }
        }
        pt->loss[pt->n_loss] = v[c_loss];
        times[pt->n_loss] = v[c_time];
        pt->n_loss++;
        if (v[c_arena] > pt->train_arena) pt->train_arena = v[c_arena];
        pt->skipped += v[c_skip] != 0;
    }
    if (pt->n_loss == 0) {
        st = MF_ERROR(MF_ERR_FORMAT, "%s: no step recorded", path);
        goto cleanup;
    }
    /* median step time: insertion sort (a few hundred values) */
    for (int64_t i = 1; i < pt->n_loss; i++)
        for (int64_t j = i; j > 0 && times[j - 1] > times[j]; j--) {
            const double t = times[j];
            times[j] = times[j - 1];
            times[j - 1] = t;
        }
    pt->step_median = pt->n_loss % 2 ? times[pt->n_loss / 2]
                                     : 0.5 * (times[pt->n_loss / 2 - 1] + times[pt->n_loss / 2]);
    pt->final_loss = pt->loss[pt->n_loss - 1];
cleanup:
    fclose(f);
    free(times);
    return st;
}

static mf_status read_json(const char *path, cJSON **out)
{
    char *text = NULL;
    size_t len = 0;
    MF_TRY(mf_read_text_file(path, &text, &len));
    *out = cJSON_ParseWithLength(text, len);
    free(text);
    if (!*out) return MF_ERROR(MF_ERR_FORMAT, "%s: not valid JSON", path);
    return MF_OK;
}

static double json_number(const cJSON *o, const char *a, const char *b)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, a);
    if (b) x = cJSON_GetObjectItemCaseSensitive(x, b);
    return cJSON_IsNumber(x) ? x->valuedouble : NAN;
}

/* lDDT-Ca and TM-score of pred against ref (the first protein chain of each), as memfold eval
 * computes them: residues paired by number or alignment, lDDT over ref's residues. */
static mf_status score(const char *pred_path, const char *ref_path, double *lddt, double *tm)
{
    mf_protein *pc = NULL, *rc = NULL;
    int np = 0, nr = 0;
    mf_residue_pairing pairing = {0};
    double *pca = NULL, *rca = NULL, *lp = NULL, *lr = NULL;
    float *lpm = NULL, *lrm = NULL;
    mf_status st = mf_structure_read(pred_path, &pc, &np);
    if (st == MF_OK) st = mf_structure_read(ref_path, &rc, &nr);
    if (st == MF_OK && (np < 1 || nr < 1))
        st = MF_ERROR(MF_ERR_FORMAT, "%s: no protein chain", np < 1 ? pred_path : ref_path);
    if (st != MF_OK) goto cleanup;
    const mf_protein *pred = &pc[0], *ref = &rc[0];
    MF_TRY_GOTO(mf_pair_residues(pred, ref, &pairing));
    const int64_t n = ref->num_res;
    pca = malloc(sizeof(double) * (size_t)(3 * n + 1));
    rca = malloc(sizeof(double) * (size_t)(3 * n + 1));
    lp = calloc((size_t)(3 * n + 1), sizeof(double));
    lr = calloc((size_t)(3 * n + 1), sizeof(double));
    lpm = calloc((size_t)(n + 1), sizeof(float));
    lrm = calloc((size_t)(n + 1), sizeof(float));
    if (!pca || !rca || !lp || !lr || !lpm || !lrm) {
        st = MF_ERROR(MF_ERR_NOMEM, "scoring %s", pred_path);
        goto cleanup;
    }
    int64_t n_al = 0, ref_ca = 0;
    for (int64_t i = 0; i < n; i++) {
        const int64_t j = pairing.ref_to_pred[i];
        const bool rh = ref->atom_mask[i * MF_ATOM37 + CA] != 0.0f;
        const bool ph = j >= 0 && pred->atom_mask[j * MF_ATOM37 + CA] != 0.0f;
        ref_ca += rh;
        for (int k = 0; k < 3; k++) {
            lr[3 * i + k] = ref->atom_positions[(i * MF_ATOM37 + CA) * 3 + k];
            if (ph) lp[3 * i + k] = pred->atom_positions[(j * MF_ATOM37 + CA) * 3 + k];
        }
        lrm[i] = rh;
        lpm[i] = ph;
        if (rh && ph) {
            for (int k = 0; k < 3; k++) {
                pca[3 * n_al + k] = lp[3 * i + k];
                rca[3 * n_al + k] = lr[3 * i + k];
            }
            n_al++;
        }
    }
    if (n_al < 3) {
        st = MF_ERROR(MF_ERR_INVALID, "scoring %s against %s: %lld C-alpha pairs, 3 needed",
                      pred_path, ref_path, (long long)n_al);
        goto cleanup;
    }
    mf_tmscore_result tr;
    mf_lddt_result lres;
    MF_TRY_GOTO(mf_tmscore(pca, rca, n_al, ref_ca, &tr));
    MF_TRY_GOTO(mf_lddt_ca(lp, lpm, lr, lrm, n, MF_LDDT_CUTOFF, NULL, &lres));
    *tm = tr.tm_score;
    *lddt = lres.lddt;
cleanup:
    if (st != MF_OK) mf_error_context(st, "scoring %s against %s", pred_path, ref_path);
    mf_residue_pairing_free(&pairing);
    if (pc) mf_protein_list_free(pc, np);
    if (rc) mf_protein_list_free(rc, nr);
    free(pca), free(rca), free(lp), free(lr), free(lpm), free(lrm);
    return st;
}

/* ---------------------------------------------------------------------------------------------
 * The run */

typedef struct {
    const char *out, *config, *data, *targets_list;
    const char *sets[MAX_SETS];
    int n_sets;
    const char *own_targets[MAX_TARGETS];
    int n_own_targets;
    int64_t steps, seed, chains, threads;
    bool no_report;
    /* resolved */
    char exe[PATH_CAP], root[PATH_CAP], shared[PATH_CAP], train_h5[PATH_CAP];
    target targets[MAX_TARGETS];
    int n_targets;
    sample_extent train_extent;
    int64_t train_iterations; /* the most a training step runs: num_recycle + 1 */
    bool memplan;
    char memplan_note[512];
} ablate;

static int usage_error(const char *what, const char *arg)
{
    fprintf(stderr, "memfold ablate: %s%s%s\n", what, arg ? " " : "", arg ? arg : "");
    fprintf(stderr, "(memfold ablate --help lists the options)\n");
    return 2;
}

/* Runs `memfold memplan` for pt; *peak is NAN with the reason in note when it has no answer. */
static void run_memplan(const ablate *a, const point *pt, const char *mode, const sample_extent *e,
                        const char *tag, double *peak, char *note, size_t cap)
{
    *peak = NAN;
    if (!a->memplan) {
        tfmt(note, cap, "%s", a->memplan_note);
        return;
    }
    char cfg[PATH_CAP + 16], out[PATH_CAP + 64], err[PATH_CAP + 64], n1[32], n2[32], n3[32], n4[32],
        it[32];
    char v[NUM_KEYS][32];
    for (int k = 0; k < NUM_KEYS; k++) policy_value(&pt->policy, k, v[k], sizeof v[k]);
    if (!strcmp(v[0], "off")) snprintf(v[0], sizeof v[0], "0");
    fmt(cfg, sizeof cfg, "%s/run/config.json", pt->dir);
    fmt(out, sizeof out, "%s/memplan-%s.json", pt->dir, tag);
    fmt(err, sizeof err, "%s/memplan-%s.log", pt->dir, tag);
    snprintf(n1, sizeof n1, "%lld", (long long)e->nres);
    snprintf(n2, sizeof n2, "%lld", (long long)e->nseq);
    snprintf(n3, sizeof n3, "%lld", (long long)e->nextra);
    snprintf(n4, sizeof n4, "%lld", (long long)e->ntempl);
    snprintf(it, sizeof it, "%lld", (long long)a->train_iterations);
    arglist l = {0};
    args(&l, a->exe, "memplan", "--config", cfg, "--mode", mode, "--nres", n1, "--nseq", n2,
         "--nextra", n3, "--ntempl", n4, NULL);
    if (!strcmp(mode, "train")) args(&l, "--iterations", it, NULL);
    args(&l, "--chunk", v[0], "--recompute", v[1], "--storage", v[2], "--compute", v[3],
         "--offload", v[4], "--json", NULL);
    char **argv = l.v;
    child_result r;
    if (run_child(SELF_EXE, argv, out, err, &r) != 0) {
        tfmt(note, cap, "%s", mf_last_error());
        return;
    }
    if (!child_ok(&r)) {
        char st[96], first[160] = "";
        status_text(r.status, st, sizeof st);
        FILE *f = fopen(err, "r");
        if (f) {
            if (fgets(first, sizeof first, f)) first[strcspn(first, "\r\n")] = '\0';
            fclose(f);
        }
        tfmt(note, cap, "memfold memplan --mode %s: %s%s%s", mode, st, first[0] ? ": " : "", first);
        return;
    }
    cJSON *j = NULL;
    if (read_json(out, &j) != MF_OK) {
        tfmt(note, cap, "%s", mf_last_error());
        return;
    }
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, "peak_bytes");
    if (cJSON_IsNumber(p) && p->valuedouble >= 0) {
        *peak = p->valuedouble;
        note[0] = '\0';
    } else {
        tfmt(note, cap, "%s: no numeric peak_bytes", out);
    }
    cJSON_Delete(j);
}

/* Is `memfold memplan` there? (An unknown command exits with status 2.) */
static void probe_memplan(ablate *a)
{
    char out[PATH_CAP + 32];
    fmt(out, sizeof out, "%s/data/memplan-help.txt", a->out);
    char *argv[] = {(char *)a->exe, "memplan", "--help", NULL};
    child_result r;
    a->memplan = false;
    if (run_child(SELF_EXE, argv, out, NULL, &r) != 0) {
        tfmt(a->memplan_note, sizeof a->memplan_note, "%s", mf_last_error());
        return;
    }
    if (child_ok(&r)) {
        a->memplan = true;
        a->memplan_note[0] = '\0';
        return;
    }
    char st[96];
    status_text(r.status, st, sizeof st);
    tfmt(a->memplan_note, sizeof a->memplan_note,
         "memfold memplan is not available in this build ('memfold memplan --help': %s)", st);
}

/* Trains, predicts and scores point i (point 0, the baseline, first). 0, or 1 after a message. */
static int run_point(const ablate *a, point *pts, int i, int n_points)
{
    point *pt = &pts[i];
    const point *base = &pts[0];
    fmt(pt->dir, sizeof pt->dir, "%s/points/%02d", a->out, i);
    if (remove_tree(pt->dir) != MF_OK || make_dir(pt->dir) != MF_OK)
        return mf_report_error("ablate");

    /* ---- training ---- */
    char run[PATH_CAP + 8], log[PATH_CAP + 16], steps[32], seed[32];
    char setv[NUM_KEYS][64];
    fmt(run, sizeof run, "%s/run", pt->dir);
    fmt(log, sizeof log, "%s/train.log", pt->dir);
    snprintf(steps, sizeof steps, "%lld", (long long)a->steps);
    snprintf(seed, sizeof seed, "%lld", (long long)a->seed);
    arglist l = {0};
    args(&l, a->exe, "train", "--data", a->train_h5, "-o", run, "--config", a->config, "--steps",
         steps, "--seed", seed, "--batch", "1", "--keep", "1", NULL);
    for (size_t s = 0; s < sizeof train_sets / sizeof *train_sets; s++)
        args(&l, "--set", train_sets[s], NULL);
    for (int s = 0; s < a->n_sets; s++) args(&l, "--set", a->sets[s], NULL);
    for (int k = 0; k < NUM_KEYS; k++) {
        char v[32];
        policy_value(&pt->policy, k, v, sizeof v);
        snprintf(setv[k], sizeof setv[k], "memory.%s=%s", policy_keys[k], v);
        args(&l, "--set", setv[k], NULL);
    }
    char **argv = l.v;
    child_result r;
    if (run_child(SELF_EXE, argv, log, NULL, &r) != 0) return mf_report_error("ablate");
    if (!child_ok(&r)) return child_failed("training (memfold train)", argv, &r, log);
    pt->train_rss = r.rss;
    pt->train_wall = r.seconds;
    if (read_train_log(run, pt) != MF_OK) return mf_report_error("ablate");
    if (pt->n_loss != base->n_loss) {
        fprintf(stderr, "memfold ablate: %s/log.csv has %lld steps, the baseline's %lld\n", run,
                (long long)pt->n_loss, (long long)base->n_loss);
        return 1;
    }
    pt->dev_max_rel = 0;
    for (int64_t s = 0; s < pt->n_loss; s++) {
        const double d = fabs(pt->loss[s] - base->loss[s]) / fabs(base->loss[s]);
        if (!(d <= pt->dev_max_rel)) pt->dev_max_rel = d; /* NaN sticks */
        if (isnan(pt->dev_max_rel)) break;
    }
    pt->dev_final = pt->final_loss - base->final_loss;
    run_memplan(a, pt, "train", &a->train_extent, "train", &pt->train_memplan,
                pt->train_memplan_note, sizeof pt->train_memplan_note);

    /* ---- inference: every target with the point's chunk and compute precision ---- */
    char params[PATH_CAP + 16], cfg[PATH_CAP + 16], pred[PATH_CAP + 8], chunk[32], compute[32];
    fmt(params, sizeof params, "%s/params.h5", run);
    fmt(cfg, sizeof cfg, "%s/config.json", run);
    fmt(pred, sizeof pred, "%s/pred", pt->dir);
    policy_value(&pt->policy, 0, chunk, sizeof chunk);
    policy_value(&pt->policy, 3, compute, sizeof compute);
    for (int t = 0; t < a->n_targets; t++) {
        const target *tg = &a->targets[t];
        infer_result *ir = &pt->inf[t];
        char plog[PATH_CAP + 160], json[PATH_CAP + 160], tag[160];
        fmt(plog, sizeof plog, "%s/predict-%s.log", pt->dir, tg->name);
        char *pargv[] = {
            (char *)a->exe, "predict",  "--fasta",   (char *)tg->fasta, "--params",
            params,         "--config", cfg,         "--name",          (char *)tg->name,
            "--chunk",      chunk,      "--compute", compute,           "-o",
            pred,           NULL};
        if (run_child(SELF_EXE, pargv, plog, NULL, &r) != 0) return mf_report_error("ablate");
        if (!child_ok(&r)) return child_failed("inference (memfold predict)", pargv, &r, plog);
        ir->rss = r.rss;
        fmt(json, sizeof json, "%s/%s.json", pred, tg->name);
        fmt(ir->pdb, sizeof ir->pdb, "%s/%s.pdb", pred, tg->name);
        cJSON *j = NULL;
        if (read_json(json, &j) != MF_OK) return mf_report_error("ablate");
        ir->arena = json_number(j, "memory", "arena_high_water_bytes");
        ir->seconds = json_number(j, "timings", "predict");
        ir->mean_plddt = json_number(j, "mean_plddt", NULL);
        cJSON_Delete(j);
        if (!isfinite(ir->arena)) {
            fprintf(stderr, "memfold ablate: %s: no memory.arena_high_water_bytes\n", json);
            return 1;
        }
        ir->lddt_true = ir->tm_true = NAN;
        if (tg->ref[0] && score(ir->pdb, tg->ref, &ir->lddt_true, &ir->tm_true) != MF_OK)
            return mf_report_error("ablate");
        if (score(ir->pdb, base->inf[t].pdb, &ir->lddt_base, &ir->tm_base) != MF_OK)
            return mf_report_error("ablate");
        fmt(tag, sizeof tag, "infer-%s", tg->name);
        /* a FASTA query without MSA or templates: one MSA row, nothing extra */
        const sample_extent e = {.nres = tg->nres, .nseq = 1, .nextra = 0, .ntempl = 0};
        run_memplan(a, pt, "infer", &e, tag, &ir->memplan, ir->memplan_note,
                    sizeof ir->memplan_note);
    }

    char b1[32], b2[32], b3[32], b4[32], mp[48] = "n/a";
    if (isfinite(pt->train_memplan)) mf_format_bytes((size_t)pt->train_memplan, mp, sizeof mp);
    const infer_result *i0 = &pt->inf[0];
    fprintf(stderr,
            "ablate [%d/%d] %s: train %lld steps %.1f s (%.3f s/step), arena %s, RSS %s, "
            "memplan %s, loss dev %.2e (final %+.2e); %s: arena %s, RSS %s, lDDT-Ca vs base "
            "%.4f vs true %.4f\n",
            i + 1, n_points, pt->label, (long long)pt->n_loss, pt->train_wall, pt->step_median,
            mf_format_bytes((size_t)pt->train_arena, b1, sizeof b1),
            mf_format_bytes((size_t)pt->train_rss, b2, sizeof b2), mp, pt->dev_max_rel,
            pt->dev_final, a->targets[0].name, mf_format_bytes((size_t)i0->arena, b3, sizeof b3),
            mf_format_bytes((size_t)i0->rss, b4, sizeof b4), i0->lddt_base, i0->lddt_true);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Outputs: CSV and JSON (each written under a temporary name and renamed) */

static void put_num(FILE *f, double v, bool na_when_nan)
{
    if (isnan(v) && na_when_nan)
        fputs(",n/a", f);
    else
        fprintf(f, ",%.10g", v);
}

static void put_infer_cols(FILE *f, const target *t, const infer_result *ir)
{
    fprintf(f, ",%s,%lld", t->name, (long long)t->nres);
    put_num(f, ir->arena, false);
    put_num(f, ir->rss, false);
    put_num(f, ir->memplan, true);
    put_num(f, ir->seconds, false);
    put_num(f, ir->mean_plddt, false);
    put_num(f, ir->lddt_base, true);
    put_num(f, ir->tm_base, true);
    put_num(f, ir->lddt_true, true);
    put_num(f, ir->tm_true, true);
}

static const char *const infer_header =
    "target,nres,infer_arena_peak_bytes,infer_rss_peak_bytes,infer_memplan_peak_bytes,"
    "infer_time_s,mean_plddt,lddt_ca_vs_base,tm_vs_base,lddt_ca_vs_true,tm_vs_true";

static mf_status finish_file(FILE *f, const char *tmp, const char *path)
{
    const bool bad = ferror(f) != 0;
    if (fclose(f) != 0 || bad) {
        remove(tmp);
        return MF_ERROR(MF_ERR_IO, "writing %s failed", tmp);
    }
    if (rename(tmp, path) != 0)
        return MF_ERROR(MF_ERR_IO, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
    return MF_OK;
}

static mf_status write_csvs(const ablate *a, const point *pts, int n)
{
    char path[PATH_CAP + 32], tmp[PATH_CAP + 40];
    fmt(path, sizeof path, "%s/ablate.csv", a->out);
    fmt(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return MF_ERROR(MF_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
    fprintf(f,
            "point,label,chunk,recompute,storage,compute,offload,steps,train_arena_peak_bytes,"
            "train_rss_peak_bytes,train_memplan_peak_bytes,step_time_median_s,train_wall_s,"
            "final_loss,loss_dev_max_rel,loss_final_diff,skipped_steps,%s\n",
            infer_header);
    for (int i = 0; i < n; i++) {
        const point *p = &pts[i];
        fprintf(f, "%d,\"%s\"", i, p->label);
        for (int k = 0; k < NUM_KEYS; k++) {
            char v[32];
            policy_value(&p->policy, k, v, sizeof v);
            fprintf(f, ",%s", v);
        }
        fprintf(f, ",%lld", (long long)p->n_loss);
        put_num(f, p->train_arena, false);
        put_num(f, p->train_rss, false);
        put_num(f, p->train_memplan, true);
        put_num(f, p->step_median, false);
        put_num(f, p->train_wall, false);
        put_num(f, p->final_loss, false);
        put_num(f, p->dev_max_rel, false);
        put_num(f, p->dev_final, false);
        fprintf(f, ",%lld", (long long)p->skipped);
        put_infer_cols(f, &a->targets[0], &p->inf[0]);
        fputc('\n', f);
    }
    MF_TRY(finish_file(f, tmp, path));

    fmt(path, sizeof path, "%s/ablate_lengths.csv", a->out);
    fmt(tmp, sizeof tmp, "%s.tmp", path);
    f = fopen(tmp, "w");
    if (!f) return MF_ERROR(MF_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
    fprintf(f, "point,label,%s\n", infer_header);
    for (int i = 0; i < n; i++)
        for (int t = 0; t < a->n_targets; t++) {
            fprintf(f, "%d,\"%s\"", i, pts[i].label);
            put_infer_cols(f, &a->targets[t], &pts[i].inf[t]);
            fputc('\n', f);
        }
    return finish_file(f, tmp, path);
}

static cJSON *num_or_null(double v)
{
    return isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull();
}

/* path relative to the output folder when inside it (the report links files by these). */
static const char *rel(const ablate *a, const char *path)
{
    const size_t n = strlen(a->out);
    return !strncmp(path, a->out, n) && path[n] == '/' ? path + n + 1 : path;
}

static mf_status write_json(const ablate *a, const point *pts, int n, double wall)
{
    cJSON *root = cJSON_CreateObject();
    if (!root) return MF_ERROR(MF_ERR_NOMEM, "ablate.json");
    cJSON_AddStringToObject(root, "schema", "memfold.ablate");
    cJSON_AddNumberToObject(root, "schema_version", 1);
    cJSON_AddStringToObject(root, "tool", "memfold " MF_VERSION);
    cJSON_AddStringToObject(root, "config", a->config);
    cJSON_AddNumberToObject(root, "steps", (double)a->steps);
    cJSON_AddNumberToObject(root, "seed", (double)a->seed);
    cJSON_AddNumberToObject(root, "threads", (double)a->threads);
    cJSON *sets = cJSON_AddArrayToObject(root, "train_sets");
    for (size_t s = 0; sets && s < sizeof train_sets / sizeof *train_sets; s++)
        cJSON_AddItemToArray(sets, cJSON_CreateString(train_sets[s]));
    for (int s = 0; sets && s < a->n_sets; s++)
        cJSON_AddItemToArray(sets, cJSON_CreateString(a->sets[s]));
    cJSON_AddStringToObject(root, "train_data", a->train_h5);
    cJSON *ext = cJSON_AddObjectToObject(root, "train_extent");
    cJSON_AddNumberToObject(ext, "nres", (double)a->train_extent.nres);
    cJSON_AddNumberToObject(ext, "nseq", (double)a->train_extent.nseq);
    cJSON_AddNumberToObject(ext, "nextra", (double)a->train_extent.nextra);
    cJSON_AddNumberToObject(ext, "ntempl", (double)a->train_extent.ntempl);
    cJSON_AddNumberToObject(ext, "iterations", (double)a->train_iterations);
    cJSON *tg = cJSON_AddArrayToObject(root, "targets");
    for (int t = 0; tg && t < a->n_targets; t++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", a->targets[t].name);
        cJSON_AddNumberToObject(o, "nres", (double)a->targets[t].nres);
        cJSON_AddStringToObject(o, "fasta", a->targets[t].fasta);
        if (a->targets[t].ref[0])
            cJSON_AddStringToObject(o, "ref", a->targets[t].ref);
        else
            cJSON_AddNullToObject(o, "ref");
        cJSON_AddItemToArray(tg, o);
    }
    cJSON *mp = cJSON_AddObjectToObject(root, "memplan");
    cJSON_AddBoolToObject(mp, "available", a->memplan);
    cJSON_AddStringToObject(mp, "note", a->memplan_note);
    cJSON_AddNumberToObject(root, "baseline", 0);
    cJSON_AddNumberToObject(root, "wall_s", wall);
    cJSON *arr = cJSON_AddArrayToObject(root, "points");
    for (int i = 0; arr && i < n; i++) {
        const point *p = &pts[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "point", i);
        cJSON_AddStringToObject(o, "label", p->label);
        cJSON_AddStringToObject(o, "spec", p->spec);
        cJSON *pol = cJSON_AddObjectToObject(o, "policy");
        for (int k = 0; k < NUM_KEYS; k++) {
            char v[32];
            policy_value(&p->policy, k, v, sizeof v);
            cJSON_AddStringToObject(pol, policy_keys[k], v);
        }
        cJSON_AddStringToObject(o, "dir", rel(a, p->dir));
        cJSON *tr = cJSON_AddObjectToObject(o, "train");
        cJSON_AddNumberToObject(tr, "steps", (double)p->n_loss);
        cJSON_AddNumberToObject(tr, "arena_peak_bytes", p->train_arena);
        cJSON_AddNumberToObject(tr, "rss_peak_bytes", p->train_rss);
        cJSON_AddItemToObject(tr, "memplan_peak_bytes", num_or_null(p->train_memplan));
        cJSON_AddStringToObject(tr, "memplan_note", p->train_memplan_note);
        cJSON_AddNumberToObject(tr, "step_time_median_s", p->step_median);
        cJSON_AddNumberToObject(tr, "wall_s", p->train_wall);
        cJSON_AddItemToObject(tr, "final_loss", num_or_null(p->final_loss));
        cJSON_AddItemToObject(tr, "loss_dev_max_rel", num_or_null(p->dev_max_rel));
        cJSON_AddItemToObject(tr, "loss_final_diff", num_or_null(p->dev_final));
        cJSON_AddNumberToObject(tr, "skipped_steps", (double)p->skipped);
        cJSON *loss = cJSON_AddArrayToObject(tr, "loss");
        for (int64_t s = 0; loss && s < p->n_loss; s++)
            cJSON_AddItemToArray(loss, num_or_null(p->loss[s]));
        cJSON *inf = cJSON_AddArrayToObject(o, "infer");
        for (int t = 0; inf && t < a->n_targets; t++) {
            const infer_result *ir = &p->inf[t];
            cJSON *x = cJSON_CreateObject();
            cJSON_AddStringToObject(x, "target", a->targets[t].name);
            cJSON_AddNumberToObject(x, "nres", (double)a->targets[t].nres);
            cJSON_AddNumberToObject(x, "arena_peak_bytes", ir->arena);
            cJSON_AddNumberToObject(x, "rss_peak_bytes", ir->rss);
            cJSON_AddItemToObject(x, "memplan_peak_bytes", num_or_null(ir->memplan));
            cJSON_AddStringToObject(x, "memplan_note", ir->memplan_note);
            cJSON_AddItemToObject(x, "time_s", num_or_null(ir->seconds));
            cJSON_AddItemToObject(x, "mean_plddt", num_or_null(ir->mean_plddt));
            cJSON_AddItemToObject(x, "lddt_ca_vs_base", num_or_null(ir->lddt_base));
            cJSON_AddItemToObject(x, "tm_vs_base", num_or_null(ir->tm_base));
            cJSON_AddItemToObject(x, "lddt_ca_vs_true", num_or_null(ir->lddt_true));
            cJSON_AddItemToObject(x, "tm_vs_true", num_or_null(ir->tm_true));
            cJSON_AddStringToObject(x, "pdb", rel(a, ir->pdb));
            cJSON_AddItemToArray(inf, x);
        }
        cJSON_AddItemToArray(arr, o);
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) return MF_ERROR(MF_ERR_NOMEM, "ablate.json");
    char path[PATH_CAP + 32], tmp[PATH_CAP + 40];
    fmt(path, sizeof path, "%s/ablate.json", a->out);
    fmt(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        cJSON_free(text);
        return MF_ERROR(MF_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
    }
    fputs(text, f);
    fputc('\n', f);
    cJSON_free(text);
    return finish_file(f, tmp, path);
}

/* The table on stdout. */
static void print_table(const ablate *a, const point *pts, int n)
{
    int w = 6;
    for (int i = 0; i < n; i++)
        if ((int)strlen(pts[i].label) > w) w = (int)strlen(pts[i].label);
    printf("%-2s %-*s %10s %10s %10s %7s %9s %9s %10s %10s %10s %7s %7s %7s %7s\n", "#", w,
           "policy", "tr_arena", "tr_rss", "tr_plan", "s/step", "loss_dev", "loss_diff", "in_arena",
           "in_rss", "in_plan", "lddt_b", "tm_b", "lddt_t", "tm_t");
    for (int i = 0; i < n; i++) {
        const point *p = &pts[i];
        const infer_result *ir = &p->inf[0];
        char b1[32], b2[32], b3[32] = "n/a", b4[32], b5[32], b6[32] = "n/a";
        if (isfinite(p->train_memplan)) mf_format_bytes((size_t)p->train_memplan, b3, sizeof b3);
        if (isfinite(ir->memplan)) mf_format_bytes((size_t)ir->memplan, b6, sizeof b6);
        printf("%-2d %-*s %10s %10s %10s %7.3f %9.2e %+9.2e %10s %10s %10s %7.4f %7.4f %7.4f "
               "%7.4f\n",
               i, w, p->label, mf_format_bytes((size_t)p->train_arena, b1, sizeof b1),
               mf_format_bytes((size_t)p->train_rss, b2, sizeof b2), b3, p->step_median,
               p->dev_max_rel, p->dev_final, mf_format_bytes((size_t)ir->arena, b4, sizeof b4),
               mf_format_bytes((size_t)ir->rss, b5, sizeof b5), b6, ir->lddt_base, ir->tm_base,
               ir->lddt_true, ir->tm_true);
    }
    printf("(tr_: training, the largest step; in_: inference of %s, %lld residues; *_plan: memfold "
           "memplan's peak_bytes; loss_dev: max over steps of |loss - loss_base| / |loss_base|, "
           "loss_diff: at the last step; _b: against the baseline's prediction, _t: against the "
           "true structure)\n",
           a->targets[0].name, (long long)a->targets[0].nres);
}

static int parse_args(int argc, char **argv, ablate *a, point *pts, int *n_points)
{
    memset(a, 0, sizeof *a);
    a->config = "tiny";
    a->steps = DEFAULT_STEPS;
    a->seed = 1;
    a->chains = DEFAULT_CHAINS;
    a->threads = 1;
    a->targets_list = DEFAULT_TARGETS;
    const char *baseline = NULL;
    /* the point options in order; expanded once the baseline is known */
    const char *pspec[MAX_POINTS];
    bool pgrid[MAX_POINTS];
    int n_spec = 0;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            ablate_usage(stdout);
            return -1;
        }
        if (!strcmp(o, "--no-report")) {
            a->no_report = true;
            continue;
        }
        if (i + 1 >= argc) return usage_error("missing value after", o);
        const char *v = argv[++i];
        if (strlen(v) >= MAX_ARG) return usage_error("value too long after", o);
        if (!strcmp(o, "-o") || !strcmp(o, "--out")) {
            a->out = v;
        } else if (!strcmp(o, "--grid") || !strcmp(o, "--policy")) {
            if (n_spec == MAX_POINTS) return usage_error("too many --grid/--policy", NULL);
            pgrid[n_spec] = !strcmp(o, "--grid");
            pspec[n_spec++] = v;
        } else if (!strcmp(o, "--baseline")) {
            baseline = v;
        } else if (!strcmp(o, "--steps")) {
            if (!mf_cli_parse_i64(v, 1, &a->steps))
                return usage_error("--steps: expected N >= 1:", v);
        } else if (!strcmp(o, "--seed")) {
            if (!mf_cli_parse_i64(v, 0, &a->seed))
                return usage_error("--seed: expected S >= 0:", v);
        } else if (!strcmp(o, "--config")) {
            a->config = v;
        } else if (!strcmp(o, "--set")) {
            if (!strncmp(v, "memory.", 7))
                return usage_error("--set: the memory policy is the point's (--grid, --policy):",
                                   v);
            if (a->n_sets == MAX_SETS) return usage_error("too many --set", NULL);
            a->sets[a->n_sets++] = v;
        } else if (!strcmp(o, "--data")) {
            a->data = v;
        } else if (!strcmp(o, "--train-chains")) {
            if (!mf_cli_parse_i64(v, 1, &a->chains))
                return usage_error("--train-chains: expected N >= 1:", v);
        } else if (!strcmp(o, "--targets")) {
            a->targets_list = v;
        } else if (!strcmp(o, "--target")) {
            if (a->n_own_targets == MAX_TARGETS) return usage_error("too many --target", NULL);
            a->own_targets[a->n_own_targets++] = v;
        } else if (!strcmp(o, "--threads")) {
            if (!mf_cli_parse_i64(v, 0, &a->threads))
                return usage_error("--threads: expected T >= 0:", v);
        } else {
            return usage_error("unknown option", o);
        }
    }
    if (!a->out) return usage_error("-o DIR is required", NULL);
    mf_policy base = mf_policy_default();
    policy_items it;
    int rc;
    *n_points = 0;
    if (baseline) {
        if ((rc = parse_items("--baseline", baseline, false, &it))) return rc;
        if ((rc = add_points(&it, &base, pts, n_points))) return rc;
        base = pts[0].policy;
    }
    if (n_spec == 0) {
        if (!baseline) {
            pts[0] = (point){.policy = base};
            describe_point(&pts[0]);
            *n_points = 1;
        }
        for (size_t d = 0; d < sizeof default_policies / sizeof *default_policies; d++) {
            if ((rc = parse_items("default policy", default_policies[d], false, &it))) return rc;
            if ((rc = add_points(&it, &base, pts, n_points))) return rc;
        }
    }
    for (int s = 0; s < n_spec; s++) {
        if ((rc = parse_items(pgrid[s] ? "--grid" : "--policy", pspec[s], pgrid[s], &it)))
            return rc;
        if ((rc = add_points(&it, &base, pts, n_points))) return rc;
    }
    return 0;
}

/* Training features and targets: given, or prepared in DIR/data from the bundled data. */
static int prepare_data(ablate *a)
{
    char data[PATH_CAP + 8], dir[PATH_CAP + 16];
    fmt(data, sizeof data, "%s/data", a->shared);
    const bool need_bundled = !a->data || a->n_own_targets == 0;
    if (need_bundled && !is_file((fmt(dir, sizeof dir, "%s/manifest.tsv", data), dir))) {
        fprintf(stderr,
                "memfold ablate: no bundled data at %s (set MEMFOLD_SHARED to the shared/ folder, "
                "or give --data and --target)\n",
                data);
        return 1;
    }
    fmt(dir, sizeof dir, "%s/data", a->out);
    if (make_dir(dir) != MF_OK) return mf_report_error("ablate");
    if (a->data) {
        if (!is_file(a->data)) {
            fprintf(stderr, "memfold ablate: --data %s: no such file\n", a->data);
            return 1;
        }
        fmt(a->train_h5, sizeof a->train_h5, "%s", a->data);
    } else {
        char train[PATH_CAP + 16], log[PATH_CAP + 32];
        fmt(train, sizeof train, "%s/data/train", a->out);
        fmt(a->train_h5, sizeof a->train_h5, "%s/data/train.h5", a->out);
        fmt(log, sizeof log, "%s/data/featurize.log", a->out);
        if (remove_tree(train) != MF_OK || make_dir(train) != MF_OK ||
            link_training_chains(data, train, (int)a->chains) != MF_OK)
            return mf_report_error("ablate");
        char *argv[] = {(char *)a->exe, "featurize", "--structures", train, "-o",      a->train_h5,
                        "--min-length", "30",        "--max-length", "150", "--quiet", NULL};
        child_result r;
        if (run_child(SELF_EXE, argv, log, NULL, &r) != 0) return mf_report_error("ablate");
        if (!child_ok(&r)) return child_failed("featurization (memfold featurize)", argv, &r, log);
    }
    a->n_targets = 0;
    if (a->n_own_targets) {
        for (int t = 0; t < a->n_own_targets; t++)
            if (own_target(a->own_targets[t], &a->targets[a->n_targets++]) != MF_OK)
                return mf_report_error("ablate");
    } else {
        char list[1024];
        snprintf(list, sizeof list, "%s", a->targets_list);
        for (char *s = NULL, *name = strtok_r(list, ",", &s); name;
             name = strtok_r(NULL, ",", &s)) {
            if (a->n_targets == MAX_TARGETS) return usage_error("too many --targets", NULL);
            if (strlen(name) >= sizeof a->targets[0].name || strchr(name, '/'))
                return usage_error("--targets: not a target name:", name);
            char fasta[PATH_CAP + 160];
            fmt(fasta, sizeof fasta, "%s/data/%s.fasta", a->out, name);
            if (bundled_target(data, name, fasta, &a->targets[a->n_targets++]) != MF_OK)
                return mf_report_error("ablate");
        }
        if (a->n_targets == 0) return usage_error("--targets: no target in", a->targets_list);
    }
    for (int t = 0; t < a->n_targets; t++)
        for (int u = 0; u < t; u++)
            if (!strcmp(a->targets[t].name, a->targets[u].name))
                return usage_error("target given twice:", a->targets[t].name);
    return 0;
}

int mf_cmd_ablate(int argc, char **argv)
{
    const double t0 = now_seconds();
    ablate *a = calloc(1, sizeof *a);
    point *pts = calloc(MAX_POINTS, sizeof *pts);
    int n_points = 0, rc = 1;
    if (!a || !pts) {
        fprintf(stderr, "memfold ablate: out of memory\n");
        goto done;
    }
    rc = parse_args(argc, argv, a, pts, &n_points);
    if (rc) {
        rc = rc < 0 ? 0 : rc;
        goto done;
    }
    rc = 1;
    /* the training configuration, checked before anything runs */
    {
        const char *sets[MAX_SETS + 3];
        int ns = 0;
        for (size_t s = 0; s < sizeof train_sets / sizeof *train_sets; s++)
            sets[ns++] = train_sets[s];
        for (int s = 0; s < a->n_sets; s++) sets[ns++] = a->sets[s];
        mf_config *cfg = malloc(sizeof *cfg);
        if (!cfg || mf_config_load_with_overrides(a->config, sets, ns, cfg) != MF_OK) {
            free(cfg);
            rc = cfg ? mf_report_error("ablate") : 1;
            goto done;
        }
        /* the loader needs cfg below; keep it until the extent is known */
        const ssize_t len = readlink("/proc/self/exe", a->exe, sizeof a->exe - 1);
        if (len <= 0) {
            fprintf(stderr, "memfold ablate: cannot resolve /proc/self/exe: %s\n", strerror(errno));
            free(cfg);
            goto done;
        }
        a->exe[len] = '\0';
        find_checkout(a->exe, a->root, sizeof a->root);
        const char *sh = getenv("MEMFOLD_SHARED");
        if (sh && *sh)
            fmt(a->shared, sizeof a->shared, "%s", sh);
        else if (a->root[0])
            fmt(a->shared, sizeof a->shared, "%s/../shared", a->root);
        else
            fmt(a->shared, sizeof a->shared, "../shared");
        if (a->threads > 0) {
            char t[32];
            snprintf(t, sizeof t, "%lld", (long long)a->threads);
            setenv("OMP_NUM_THREADS", t, 1);
        }
        if (make_dir(a->out) != MF_OK) {
            free(cfg);
            rc = mf_report_error("ablate");
            goto done;
        }
        /* a previous run's results must not survive a failed one */
        const char *stale[] = {"report.html", "ablate.csv", "ablate_lengths.csv", "ablate.json"};
        for (size_t s = 0; s < sizeof stale / sizeof *stale; s++) {
            char p[PATH_CAP + 32];
            fmt(p, sizeof p, "%s/%s", a->out, stale[s]);
            remove(p);
        }
        char points_dir[PATH_CAP + 16];
        fmt(points_dir, sizeof points_dir, "%s/points", a->out);
        if (remove_tree(points_dir) != MF_OK || make_dir(points_dir) != MF_OK) {
            free(cfg);
            rc = mf_report_error("ablate");
            goto done;
        }
        if ((rc = prepare_data(a)) != 0) {
            free(cfg);
            goto done;
        }
        rc = 1;
        const mf_status st = training_extent(a->train_h5, cfg, &a->train_extent);
        a->train_iterations = cfg->recycling.num_recycle + 1;
        free(cfg);
        if (st != MF_OK) {
            rc = mf_report_error("ablate");
            goto done;
        }
    }
    probe_memplan(a);
    fprintf(
        stderr, "memfold ablate: %d points x %lld steps (config %s, seed %lld, %s), %d target(s): ",
        n_points, (long long)a->steps, a->config, (long long)a->seed, a->train_h5, a->n_targets);
    for (int t = 0; t < a->n_targets; t++)
        fprintf(stderr, "%s%s (%lld)", t ? ", " : "", a->targets[t].name,
                (long long)a->targets[t].nres);
    fprintf(stderr, "; baseline %s%s%s\n", pts[0].spec, a->memplan ? "" : "; ",
            a->memplan ? "" : a->memplan_note);
    for (int i = 0; i < n_points; i++)
        if ((rc = run_point(a, pts, i, n_points)) != 0) goto done;
    rc = 1;
    if (write_csvs(a, pts, n_points) != MF_OK ||
        write_json(a, pts, n_points, now_seconds() - t0) != MF_OK) {
        rc = mf_report_error("ablate");
        goto done;
    }
    print_table(a, pts, n_points);
    if (!a->no_report) {
        char script[PATH_CAP + 32], log[PATH_CAP + 16];
        fmt(script, sizeof script, "%s/scripts/ablate_report.py", a->root);
        fmt(log, sizeof log, "%s/report.log", a->out);
        if (!a->root[0] || !is_file(script)) {
            fprintf(stderr,
                    "memfold ablate: scripts/ablate_report.py not found (set MEMFOLD_SOURCE to the "
                    "checkout, or --no-report); ablate.csv and ablate.json are written\n");
            goto done;
        }
        const char *py = is_file("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
        char *pargv[] = {(char *)py, script, (char *)a->out, NULL};
        child_result r;
        if (run_child(py, pargv, log, NULL, &r) != 0) {
            rc = mf_report_error("ablate");
            goto done;
        }
        if (!child_ok(&r)) {
            rc = child_failed("the report (scripts/ablate_report.py)", pargv, &r, log);
            goto done;
        }
        printf("report: %s/report.html\n", a->out);
    }
    printf("ablate: %d points in %.1f s; ablate.csv, ablate_lengths.csv, ablate.json in %s\n",
           n_points, now_seconds() - t0, a->out);
    rc = 0;
done:
    for (int i = 0; pts && i < n_points; i++) free(pts[i].loss);
    free(pts);
    free(a);
    return rc;
}
